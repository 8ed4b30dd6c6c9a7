/* The parsed form of a Jinja template, shared by the parser and the renderer. */
#ifndef MOPT_JINJA_IMPL_H
#define MOPT_JINJA_IMPL_H

#include <stdbool.h>

#include "jinja.h"

/* Expressions. */
typedef enum jx_kind {
    X_LIT,    /* lit */
    X_NAME,   /* name */
    X_ATTR,   /* a.name */
    X_INDEX,  /* a[b] */
    X_SLICE,  /* a[s0:s1:s2], each may be NULL */
    X_CALL,   /* a(args, kw=args) */
    X_FILTER, /* a | name(args) */
    X_TEST,   /* a is [not] name(args) */
    X_NOT,    /* not a */
    X_NEG,    /* -a */
    X_BIN,    /* a op b: op is the operator's text */
    X_AND,    /* a and b */
    X_OR,     /* a or b */
    X_COND,   /* a if b else c (c NULL: undefined) */
    X_LIST,   /* [args] */
    X_DICT,   /* {args[0]: args[1], ...} */
} jx_kind;

typedef struct jx jx;
struct jx {
    jx_kind kind;
    int line;
    const char *name; /* X_NAME, X_ATTR, X_FILTER, X_TEST; X_BIN's operator */
    json_t *lit;      /* X_LIT (the template holds the reference) */
    jx *a, *b, *c;
    jx *s[3];         /* X_SLICE */
    jx **args;        /* X_CALL, X_FILTER, X_TEST, X_LIST, X_DICT */
    const char **kw;  /* keyword of each argument, NULL for positional */
    int nargs;
    bool negate;      /* X_TEST: is not */
};

/* Statements. */
typedef enum js_kind { S_TEXT, S_OUT, S_IF, S_FOR, S_SET, S_BREAK, S_CONTINUE, S_MACRO } js_kind;

typedef struct js js;
typedef struct jbody {
    js **v;
    int n, cap;
} jbody;

struct js {
    js_kind kind;
    int line;
    const char *text; /* S_TEXT */
    size_t len;
    jx *x;            /* S_OUT; S_SET's value (NULL: the body's text); S_FOR's sequence; S_MACRO's parameters (an
                       * X_CALL's arguments: X_NAMEs, then defaults under their names in kw) */
    /* S_IF: branch i runs bodies[i] when conds[i] holds; conds[n-1] NULL is the else */
    jx **conds;
    jbody *bodies;
    int n;
    /* S_FOR */
    const char *var[2];
    int nvar;
    jx *filter;
    jbody body, else_body; /* S_FOR; S_SET's block body; S_MACRO's */
    /* S_SET: target, or target.attr; S_MACRO: its name */
    const char *target, *attr;
};

/* Everything a template allocates lives in its arena. */
typedef struct jarena_chunk jarena_chunk;

struct jinja_template {
    jbody top;
    jarena_chunk *chunks;
    json_t **lits;
    int nlits, caplits;
};

#endif
