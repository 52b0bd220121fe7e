/* partition.c - the partition of a key: FNV-1a 32 modulo N, as nats-server's partition() mapping computes it. */
#include "partition.h"

uint32_t partition_hash(const char *key, size_t len)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)key[i];
        h *= 16777619u;
    }
    return h;
}

uint32_t partition_of(const char *key, size_t len, uint32_t n)
{
    return n ? partition_hash(key, len) % n : 0;
}

bool partition_key_ok(const char *key, size_t len)
{
    if (!key || len == 0 || len > 255)
        return false;
    for (size_t i = 0; i < len; i++) {
        switch (key[i]) {
        case '.': case '*': case '>': case ' ': case '\t': case '\r': case '\n': case '\0':
            return false;
        default:
            break;
        }
    }
    return true;
}
