/* desk_page.c - the desk's web page (engine/desk_page/desk.html, .css, .js) compiled into the binary, so
 * `verdict desk` needs no file at run time. The assembler's .incbin copies each file's bytes at build time
 * (CMakeLists.txt makes this object depend on them) and a NUL ends each. */
#include "desk.h"

#define DESK_ASSET(sym, file)                                                                                    \
    __asm__(".section .rodata\n.global " #sym "\n.type " #sym ", @object\n.balign 16\n" #sym ":\n.incbin \""     \
            VERDICT_SOURCE_DIR "/engine/desk_page/" file "\"\n.byte 0\n.size " #sym ", .-" #sym "\n.previous\n")

DESK_ASSET(desk_page_html, "desk.html");
DESK_ASSET(desk_page_css, "desk.css");
DESK_ASSET(desk_page_js, "desk.js");
