/* Writing a report as report.json, report.md and report.html. The HTML is one
 * self-contained file: tables plus inline SVG charts drawn here (no scripts,
 * no network): perplexity and size per variant as bars, latency distributions
 * per arm as overlaid histograms, per-window NLL of baseline vs candidate as a
 * scatter, training passes' loss curves as lines. Each file is written to a
 * temporary name and renamed into place. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base.h"
#include "report_impl.h"
#include "strbuf.h"

static mopt_status write_atomic(const char *dir, const char *name, const char *data, size_t n, mopt_error *err) {
    char path[4096];
    if (snprintf(path, sizeof path, "%s/%s", dir, name) >= (int)sizeof path) return MOPT_FAIL(err, MOPT_E_INVALID, "%s: path too long", dir);
    return mopt_file_write_atomic(path, data, n, err);
}

static const char *fmt_num(double v, char *buf, size_t cap) {
    if (!isfinite(v)) snprintf(buf, cap, "n/a");
    else if (v != 0 && (fabs(v) >= 1e7 || fabs(v) < 1e-3)) snprintf(buf, cap, "%.4g", v);
    else if (v == floor(v) && fabs(v) < 1e7) snprintf(buf, cap, "%.0f", v);
    else snprintf(buf, cap, "%.4f", v);
    return buf;
}

/* --- markdown ------------------------------------------------------------------------ */

static void render_md(sbuf *b, json_t *root, const char *title) {
    char n1[64], n2[64];
    sb_printf(b, "# %s\n\n", title);
    sb_printf(b, "Status: **%s**", json_string_value(json_object_get(root, "status")));
    if (json_object_get(root, "failed_pass"))
        sb_printf(b, " (pass %s: %s)", json_string_value(json_object_get(root, "failed_pass")),
                  json_string_value(json_object_get(root, "error")));
    if (json_object_get(root, "gates_status")) sb_printf(b, "; gates: **%s**", json_string_value(json_object_get(root, "gates_status")));
    sb_printf(b, "\n\n## Passes\n\n| # | pass | kind | status | seconds | options |\n|---|---|---|---|---|---|\n");
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        sb_printf(b, "| %zu | %s | %s | %s | %s | `%s` |\n", i + 1, json_string_value(json_object_get(p, "name")),
                  json_string_value(json_object_get(p, "kind")), json_string_value(json_object_get(p, "status")),
                  fmt_num(json_number_value(json_object_get(p, "seconds")), n1, sizeof n1),
                  json_string_value(json_object_get(p, "options")));
    }
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        json_t *m = json_object_get(p, "metrics"), *st = json_object_get(p, "strings");
        if (!json_object_size(m) && !json_object_size(st)) continue;
        sb_printf(b, "\n## %zu. %s\n\n| metric | value |\n|---|---|\n", i + 1, json_string_value(json_object_get(p, "name")));
        const char *k;
        json_t *v;
        json_object_foreach(st, k, v) sb_printf(b, "| %s | %s |\n", k, json_string_value(v));
        json_object_foreach(m, k, v) sb_printf(b, "| %s | %s |\n", k, fmt_num(json_is_number(v) ? json_number_value(v) : NAN, n1, sizeof n1));
    }
    json_t *gates = json_object_get(root, "gates");
    if (json_array_size(gates)) {
        sb_printf(b, "\n## Gates\n\n| metric | condition | value | result |\n|---|---|---|---|\n");
        json_t *g;
        json_array_foreach(gates, i, g) {
            sb_printf(b, "| %s | %s %s | %s | %s |\n", json_string_value(json_object_get(g, "metric")),
                      json_string_value(json_object_get(g, "op")),
                      fmt_num(json_number_value(json_object_get(g, "threshold")), n1, sizeof n1),
                      fmt_num(json_is_number(json_object_get(g, "value")) ? json_number_value(json_object_get(g, "value")) : NAN, n2, sizeof n2),
                      json_is_true(json_object_get(g, "passed")) ? "pass" : "**FAIL**");
        }
    }
}

/* --- SVG charts ------------------------------------------------------------------------ */

#define CW 640
#define CH 320
#define ML 70
#define MR 20
#define MT 36
#define MB 64
static const char *const palette[] = {"#3366cc", "#dc7633", "#2e9e57", "#9b59b6", "#c0392b", "#17a2b8"};

/* A "nice" tick step for a range. */
static double nice_step(double range, int ticks) {
    double raw = range / ticks, p = pow(10, floor(log10(raw))), f = raw / p;
    return (f < 1.5 ? 1 : f < 3 ? 2 : f < 7 ? 5 : 10) * p;
}

static void axes(sbuf *b, const char *title, const char *xlabel, const char *ylabel, double y0, double y1, int yaxis_ticks) {
    sb_printf(b, "<svg xmlns='http://www.w3.org/2000/svg' width='%d' height='%d' viewBox='0 0 %d %d' role='img'>\n", CW, CH, CW, CH);
    sb_printf(b, "<rect width='100%%' height='100%%' fill='white'/>\n");
    sb_printf(b, "<text x='%d' y='22' font-size='15' font-family='sans-serif' text-anchor='middle' font-weight='bold'>", CW / 2);
    sb_html(b, title);
    sb_printf(b, "</text>\n<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='black'/>\n", ML, CH - MB, CW - MR, CH - MB);
    sb_printf(b, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='black'/>\n", ML, MT, ML, CH - MB);
    sb_printf(b, "<text x='%d' y='%d' font-size='12' font-family='sans-serif' text-anchor='middle'>", (ML + CW - MR) / 2, CH - 12);
    sb_html(b, xlabel);
    sb_printf(b, "</text>\n<text x='16' y='%d' font-size='12' font-family='sans-serif' text-anchor='middle' transform='rotate(-90 16 %d)'>",
              (MT + CH - MB) / 2, (MT + CH - MB) / 2);
    sb_html(b, ylabel);
    sb_printf(b, "</text>\n");
    if (!yaxis_ticks) return;
    double step = nice_step(y1 - y0, 5);
    for (double v = ceil(y0 / step) * step; v <= y1 + 1e-9 * fabs(y1); v += step) {
        double y = CH - MB - (v - y0) / (y1 - y0) * (CH - MB - MT);
        sb_printf(b, "<line x1='%d' y1='%.1f' x2='%d' y2='%.1f' stroke='#ddd'/><text x='%d' y='%.1f' font-size='11' font-family='sans-serif' text-anchor='end'>%g</text>\n",
                  ML, y, CW - MR, y, ML - 6, y + 4, fabs(v) < 1e-12 ? 0.0 : v);
    }
}

static void xticks(sbuf *b, double x0, double x1) {
    double step = nice_step(x1 - x0, 6);
    for (double v = ceil(x0 / step) * step; v <= x1 + 1e-9 * fabs(x1); v += step) {
        double x = ML + (v - x0) / (x1 - x0) * (CW - ML - MR);
        sb_printf(b, "<line x1='%.1f' y1='%d' x2='%.1f' y2='%d' stroke='black'/><text x='%.1f' y='%d' font-size='11' font-family='sans-serif' text-anchor='middle'>%g</text>\n",
                  x, CH - MB, x, CH - MB + 5, x, CH - MB + 18, fabs(v) < 1e-12 ? 0.0 : v);
    }
}

/* Bars of one metric over the passes that report it. */
static int bar_chart(sbuf *b, json_t *root, const char *metric, const char *title, const char *ylabel) {
    double vals[64];
    char labels[64][96];
    int n = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        json_t *m = json_object_get(p, "metrics");
        char base_key[64];
        snprintf(base_key, sizeof base_key, "%s_baseline", metric);
        if (json_is_number(json_object_get(m, base_key)) && n < 64) { /* the pass measured the original too */
            vals[n] = json_number_value(json_object_get(m, base_key));
            snprintf(labels[n++], sizeof labels[0], "baseline");
        }
        json_t *v = json_object_get(m, metric);
        if (!json_is_number(v) || n >= 64) continue;
        vals[n] = json_number_value(v);
        snprintf(labels[n++], sizeof labels[0], "%zu. %s", i + 1, json_string_value(json_object_get(p, "name")));
    }
    if (n == 0) return 0;
    double hi = 0;
    for (int k = 0; k < n; k++) hi = fmax(hi, vals[k]);
    hi = hi > 0 ? hi * 1.1 : 1;
    axes(b, title, "variant (pass)", ylabel, 0, hi, 1);
    double slot = (double)(CW - ML - MR) / n, bw = slot * 0.6;
    for (int k = 0; k < n; k++) {
        double x = ML + slot * k + (slot - bw) / 2, h = vals[k] / hi * (CH - MB - MT);
        char nb[32];
        sb_printf(b, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s'><title>%s</title></rect>\n", x,
                  CH - MB - h, bw, h, palette[k % 6], fmt_num(vals[k], nb, sizeof nb));
        sb_printf(b, "<text x='%.1f' y='%.1f' font-size='11' font-family='sans-serif' text-anchor='middle'>%s</text>\n",
                  x + bw / 2, CH - MB - h - 4, nb);
        sb_printf(b, "<text x='%.1f' y='%d' font-size='10' font-family='sans-serif' text-anchor='middle'>", x + bw / 2, CH - MB + 16);
        sb_html(b, labels[k]);
        sb_printf(b, "</text>\n");
    }
    sb_printf(b, "</svg>\n");
    return 1;
}

/* Overlaid histograms of every series whose key starts with `prefix`. */
static int histogram(sbuf *b, json_t *root, const char *prefix, const char *title, const char *xlabel) {
    json_t *found[8];
    char names[8][96];
    int n = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        const char *k;
        json_t *v;
        json_object_foreach(json_object_get(p, "series"), k, v) {
            if (strncmp(k, prefix, strlen(prefix)) || n >= 8 || json_array_size(v) == 0) continue;
            found[n] = v;
            snprintf(names[n++], sizeof names[0], "%s (%s)", k, json_string_value(json_object_get(p, "name")));
        }
    }
    if (n == 0) return 0;
    double lo = INFINITY, hi = -INFINITY;
    for (int s = 0; s < n; s++) {
        json_t *x;
        json_array_foreach(found[s], i, x) if (json_is_number(x)) lo = fmin(lo, json_number_value(x)), hi = fmax(hi, json_number_value(x));
    }
    if (!(hi > lo)) hi = lo + 1;
    enum { BINS = 30 };
    double counts[8][BINS] = {{0}}, cmax = 1;
    for (int s = 0; s < n; s++) {
        json_t *x;
        json_array_foreach(found[s], i, x) {
            if (!json_is_number(x)) continue;
            int k = (int)((json_number_value(x) - lo) / (hi - lo) * BINS);
            k = k < 0 ? 0 : k >= BINS ? BINS - 1 : k;
            cmax = fmax(cmax, ++counts[s][k]);
        }
    }
    axes(b, title, xlabel, "count", 0, cmax * 1.1, 1);
    xticks(b, lo, hi);
    double bw = (double)(CW - ML - MR) / BINS;
    for (int s = 0; s < n; s++) {
        for (int k = 0; k < BINS; k++) {
            double h = counts[s][k] / (cmax * 1.1) * (CH - MB - MT);
            if (h > 0)
                sb_printf(b, "<rect x='%.1f' y='%.1f' width='%.1f' height='%.1f' fill='%s' fill-opacity='0.55'/>\n",
                          ML + k * bw, CH - MB - h, bw - 1, h, palette[s % 6]);
        }
        sb_printf(b, "<rect x='%d' y='%d' width='12' height='12' fill='%s'/><text x='%d' y='%d' font-size='11' font-family='sans-serif'>",
                  CW - MR - 260, MT + 4 + 16 * s, palette[s % 6], CW - MR - 242, MT + 14 + 16 * s);
        sb_html(b, names[s]);
        sb_printf(b, "</text>\n");
    }
    sb_printf(b, "</svg>\n");
    return 1;
}

/* Scatter of series `xkey` against `ykey` (same pass), with y = x. */
static int scatter(sbuf *b, json_t *root, const char *xkey, const char *ykey, const char *title, const char *xl, const char *yl) {
    size_t i;
    json_t *p, *xs = NULL, *ys = NULL;
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        json_t *se = json_object_get(p, "series");
        if (json_object_get(se, xkey) && json_object_get(se, ykey)) xs = json_object_get(se, xkey), ys = json_object_get(se, ykey);
    }
    size_t n = xs ? json_array_size(xs) : 0;
    if (n == 0 || json_array_size(ys) != n) return 0;
    double lo = INFINITY, hi = -INFINITY;
    for (size_t k = 0; k < n; k++) {
        double a = json_number_value(json_array_get(xs, k)), c = json_number_value(json_array_get(ys, k));
        lo = fmin(lo, fmin(a, c));
        hi = fmax(hi, fmax(a, c));
    }
    double pad = (hi - lo) * 0.05 + 1e-6;
    lo -= pad;
    hi += pad;
    axes(b, title, xl, yl, lo, hi, 1);
    xticks(b, lo, hi);
    const double W = CW - ML - MR, H = CH - MB - MT;
    sb_printf(b, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#999' stroke-dasharray='4 3'/>\n", ML, CH - MB, CW - MR, MT);
    for (size_t k = 0; k < n; k++) {
        double a = json_number_value(json_array_get(xs, k)), c = json_number_value(json_array_get(ys, k));
        sb_printf(b, "<circle cx='%.1f' cy='%.1f' r='2.5' fill='%s' fill-opacity='0.6'/>\n", ML + (a - lo) / (hi - lo) * W,
                  CH - MB - (c - lo) / (hi - lo) * H, palette[0]);
    }
    sb_printf(b, "<rect x='%d' y='%d' width='12' height='12' fill='%s'/><text x='%d' y='%d' font-size='11' font-family='sans-serif'>one window</text>\n",
              ML + 10, MT + 4, palette[0], ML + 28, MT + 14);
    sb_printf(b, "<line x1='%d' y1='%d' x2='%d' y2='%d' stroke='#999' stroke-dasharray='4 3'/><text x='%d' y='%d' font-size='11' font-family='sans-serif'>y = x (no change)</text>\n",
              ML + 10, MT + 28, ML + 22, MT + 28, ML + 28, MT + 32);
    sb_printf(b, "</svg>\n");
    return 1;
}

/* Loss curves of a training pass: series "train_loss" per step and
 * "val_loss" at the steps of "val_step", on one step axis. */
static int loss_chart(sbuf *b, json_t *root) {
    int drawn = 0;
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(root, "passes"), i, p) {
        json_t *se = json_object_get(p, "series"), *tl = json_object_get(se, "train_loss");
        json_t *vl = json_object_get(se, "val_loss"), *vs = json_object_get(se, "val_step");
        const size_t nt = json_array_size(tl), nv = json_array_size(vs) == json_array_size(vl) ? json_array_size(vl) : 0;
        if (nt == 0) continue;
        double lo = INFINITY, hi = -INFINITY, x1 = (double)nt;
        for (size_t k = 0; k < nt; k++) lo = fmin(lo, json_number_value(json_array_get(tl, k))), hi = fmax(hi, json_number_value(json_array_get(tl, k)));
        for (size_t k = 0; k < nv; k++) {
            lo = fmin(lo, json_number_value(json_array_get(vl, k)));
            hi = fmax(hi, json_number_value(json_array_get(vl, k)));
            x1 = fmax(x1, json_number_value(json_array_get(vs, k)));
        }
        if (!isfinite(lo) || !isfinite(hi)) continue;
        const double pad = (hi - lo) * 0.05 + 1e-6;
        lo -= pad;
        hi += pad;
        char title[160];
        snprintf(title, sizeof title, "Loss curve (%zu. %s)", i + 1, json_string_value(json_object_get(p, "name")));
        axes(b, title, "optimizer step", "loss (nats/token)", lo, hi, 1);
        xticks(b, 0, x1);
        const double W = CW - ML - MR, H = CH - MB - MT;
        json_t *series[2] = {tl, vl};
        for (int s = 0; s < 2; s++) {
            const size_t n = s ? nv : nt;
            if (!n) continue;
            sb_printf(b, "<polyline fill='none' stroke='%s' stroke-width='%s' points='", palette[s], s ? "2" : "1.2");
            for (size_t k = 0; k < n; k++) {
                const double x = s ? json_number_value(json_array_get(vs, k)) : (double)(k + 1);
                sb_printf(b, "%.1f,%.1f ", ML + x / x1 * W, CH - MB - (json_number_value(json_array_get(series[s], k)) - lo) / (hi - lo) * H);
            }
            sb_printf(b, "'/>\n<rect x='%d' y='%d' width='12' height='12' fill='%s'/><text x='%d' y='%d' font-size='11' font-family='sans-serif'>%s</text>\n",
                      CW - MR - 160, MT + 4 + 16 * s, palette[s], CW - MR - 142, MT + 14 + 16 * s, s ? "validation loss" : "training loss");
        }
        sb_printf(b, "</svg>\n");
        drawn++;
    }
    return drawn;
}

static void render_html(sbuf *b, json_t *root, const char *title, const char *md) {
    sb_printf(b, "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>");
    sb_html(b, title);
    sb_printf(b, "</title>\n<style>body{font-family:sans-serif;max-width:1000px;margin:24px auto;color:#222}"
                 "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}"
                 ".fail{color:#b00;font-weight:bold}.ok{color:#080;font-weight:bold}svg{margin:8px 0;border:1px solid #eee}</style>"
                 "</head><body>\n<h1>");
    sb_html(b, title);
    const char *status = json_string_value(json_object_get(root, "status"));
    const char *gates = json_string_value(json_object_get(root, "gates_status"));
    sb_printf(b, "</h1>\n<p>Status: <span class='%s'>%s</span>", strcmp(status, "ok") ? "fail" : "ok", status);
    if (gates) sb_printf(b, " &middot; gates: <span class='%s'>%s</span>", strcmp(gates, "ok") ? "fail" : "ok", gates);
    sb_printf(b, "</p>\n<h2>Charts</h2>\n");
    int charts = bar_chart(b, root, "ppl", "Perplexity per variant", "perplexity (lower is better)");
    charts += bar_chart(b, root, "bits_per_weight", "Size per variant", "bits per weight (decoder linears)");
    charts += histogram(b, root, "latency_ms", "Latency distribution per arm", "latency (ms)");
    charts += scatter(b, root, "window_nll_baseline", "window_nll", "Per-window NLL: baseline vs candidate",
                      "baseline NLL (nats/token)", "candidate NLL (nats/token)");
    charts += loss_chart(b, root);
    if (!charts) sb_printf(b, "<p>No chartable metrics in this report.</p>\n");
    /* the tables, from the markdown rendering */
    sb_printf(b, "<h2>Tables</h2>\n");
    int in_table = 0;
    for (const char *line = md; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        char buf[4096];
        snprintf(buf, sizeof buf, "%.*s", (int)(len < sizeof buf ? len : sizeof buf - 1), line);
        if (buf[0] == '|') {
            if (strstr(buf, "|---")) { /* separator row */
            } else {
                if (!in_table) sb_printf(b, "<table>\n");
                in_table = 1;
                sb_printf(b, "<tr>");
                char *save = NULL;
                for (char *cell = strtok_r(buf + 1, "|", &save); cell; cell = strtok_r(NULL, "|", &save)) {
                    while (*cell == ' ') cell++;
                    sb_printf(b, "<td%s>", strstr(cell, "FAIL") ? " class='fail'" : "");
                    sb_html(b, cell);
                    sb_printf(b, "</td>");
                }
                sb_printf(b, "</tr>\n");
            }
        } else {
            if (in_table) sb_printf(b, "</table>\n");
            in_table = 0;
            if (!strncmp(buf, "## ", 3)) {
                sb_printf(b, "<h3>");
                sb_html(b, buf + 3);
                sb_printf(b, "</h3>\n");
            }
        }
        line += len + (end ? 1 : 0);
    }
    if (in_table) sb_printf(b, "</table>\n");
    sb_printf(b, "</body></html>\n");
}

mopt_status mopt_report_write(const mopt_report *r, const char *dir, const char *title, mopt_error *err) {
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return MOPT_FAIL(err, MOPT_E_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    json_t *root = mopt_report_root(r);
    char *json = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(12));
    sbuf md = {0}, html = {0};
    render_md(&md, root, title ? title : "mopt report");
    if (!md.oom && md.s) render_html(&html, root, title ? title : "mopt report", md.s);
    mopt_status st = MOPT_OK;
    if (!json || md.oom || html.oom || !md.s || !html.s) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory rendering the report");
    if (!st) st = write_atomic(dir, "report.json", json, strlen(json), err);
    if (!st) st = write_atomic(dir, "report.md", md.s, md.n, err);
    if (!st) st = write_atomic(dir, "report.html", html.s, html.n, err);
    free(json);
    free(md.s);
    free(html.s);
    return st;
}
