/* The A/B split: a seeded generator for requests without a routing key, a
 * hash of the key (with the seed) for sticky ones, so a user stays on one arm
 * for as long as the split does not change. */
#include <string.h>

#include "serve.h"

static uint64_t mix64(uint64_t x) { /* splitmix64's finalizer */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

void srv_router_init(srv_router *r, double split, uint64_t seed) {
    memset(r, 0, sizeof *r);
    pthread_mutex_init(&r->mu, NULL);
    r->split = split;
    r->seed = seed;
    r->rng = seed;
}

int srv_router_pick(srv_router *r, const char *key) {
    uint64_t h;
    pthread_mutex_lock(&r->mu);
    const double split = r->split;
    if (key && *key) {
        h = 0xcbf29ce484222325ULL ^ r->seed; /* FNV-1a over the key */
        for (const unsigned char *p = (const unsigned char *)key; *p; p++) h = (h ^ *p) * 0x100000001b3ULL;
        h = mix64(h);
    } else {
        r->rng += 0x9e3779b97f4a7c15ULL;
        h = mix64(r->rng);
    }
    pthread_mutex_unlock(&r->mu);
    const double u = (double)(h >> 11) * 0x1.0p-53;
    return u < split ? SRV_CANDIDATE : SRV_BASELINE;
}

double srv_router_draw(srv_router *r) {
    pthread_mutex_lock(&r->mu);
    r->rng += 0x9e3779b97f4a7c15ULL;
    const uint64_t h = mix64(r->rng ^ 0x5bd1e9955bd1e995ULL); /* apart from the routing draws */
    pthread_mutex_unlock(&r->mu);
    return (double)(h >> 11) * 0x1.0p-53;
}

void srv_router_set_split(srv_router *r, double split) {
    pthread_mutex_lock(&r->mu);
    r->split = split;
    pthread_mutex_unlock(&r->mu);
}

double srv_router_split(srv_router *r) {
    pthread_mutex_lock(&r->mu);
    const double s = r->split;
    pthread_mutex_unlock(&r->mu);
    return s;
}
