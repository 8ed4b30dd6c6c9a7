/* The subset of Jinja that Hugging Face chat templates use, rendered as
 * transformers renders them (jinja2 with trim_blocks, lstrip_blocks and the
 * loop controls; a template's source with its newlines normalized and one
 * trailing newline dropped). Values are jansson values: the variables a
 * template sees are a JSON object, and strings, numbers, lists and mappings
 * behave as in Python (None is JSON null; an unknown name is undefined).
 *
 * Statements: if/elif/else, for (with loop.*, an `if` filter and else; each
 * iteration its own scope), set (names, namespace attributes, blocks), break,
 * continue, raw, generation, macro (parameters with defaults, called with
 * positional and keyword arguments; no caller, varargs or kwargs). Not call
 * blocks, includes or unpacking in set: those are parse errors.
 * Expressions: literals, lists, dicts, names, attributes, subscripts and
 * slices, calls, filters, `is` tests, arithmetic, ~, comparisons, in, and,
 * or, not, conditional expressions. Anything else is a parse error naming
 * its line, never undefined behaviour: the template comes from a downloaded
 * checkpoint. */
#ifndef MOPT_JINJA_H
#define MOPT_JINJA_H

#include <jansson.h>
#include <stddef.h>

typedef struct jinja_template jinja_template;

/* Parses a template; NULL with a one-line message in msg on error. */
jinja_template *jinja_parse(const char *src, size_t n, char *msg, size_t cap);
void jinja_free(jinja_template *t);

/* Renders with `vars` (a JSON object, not changed) as the global variables;
 * returns malloc'd text, or NULL with a one-line message (a template's
 * raise_exception("...") gives that text). */
char *jinja_render(const jinja_template *t, const json_t *vars, char *msg, size_t cap);

#endif
