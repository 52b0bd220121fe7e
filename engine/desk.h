/* desk.h - `verdict desk`: the analysts' desk (docs/desk.md). One process that turns every review decision into
 * a case (a durable consumer on DECISIONS filtered on decision.review.>, cases.h), keeps an index of the cases
 * (a watcher on the cases bucket), and serves the web page and its JSON API over HTTP with a login.
 *
 * The page's HTML, CSS and JavaScript are compiled in (desk_page.c): the binary needs no file at run time. */
#ifndef VERDICT_DESK_H
#define VERDICT_DESK_H

#include "featreg.h"

/* desk_page.c: the embedded assets. */
extern const char desk_page_html[];
extern const char desk_page_css[];
extern const char desk_page_js[];

/* features_cli.c: the shipped model's input columns, and the splitter of a comma-separated feature list
 * (commas inside parentheses belong to the name). The desk shows the same columns `verdict features` writes. */
const char *features_default_list(void);
int features_split(const char *s, char names[][FEAT_NAME_MAX], int max);

#endif
