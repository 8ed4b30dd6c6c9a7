/* Report internals the pipeline uses to open and close pass sections. */
#ifndef MOPT_REPORT_IMPL_H
#define MOPT_REPORT_IMPL_H

#include <jansson.h>

#include "mopt/pass.h"

/* Opens a section for a pass; later metrics/strings/artifacts go there. */
mopt_status mopt_report_begin(mopt_report *r, const char *pass, const char *kind, const char *options);
/* Closes the open section. On failure its metrics, strings and artifact files
 * are discarded and the whole report is marked failed, naming the pass. */
void mopt_report_end(mopt_report *r, mopt_status status, double seconds, const char *error);

/* The report's JSON (borrowed) for the renderers. */
json_t *mopt_report_root(const mopt_report *r);

#endif
