/* Hugging Face tokenizer.json: the BPE model with the pieces around it that
 * real byte-level (GPT-2, Llama-3, Qwen) and SentencePiece-style (Llama-2,
 * Mistral) tokenizers use. Anything else is refused by name. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "base.h"
#include "json_util.h"
#include "mopt/interrupt.h"
#include "tok_impl.h"

#define SPM_SPACE "\xe2\x96\x81" /* U+2581 "▁" */

static size_t utf8_put(char *out, uint32_t cp) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xc0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    out[0] = (char)(0xe0 | (cp >> 12));
    out[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
    out[2] = (char)(0x80 | (cp & 0x3f));
    return 3;
}

/* --- loading ---------------------------------------------------------------- */

static mopt_status fail_type(const char *path, const char *what, const char *type, mopt_error *err) {
    return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: %s type \"%s\" is not supported", path, what,
                     type ? type : "(missing)");
}

static mopt_status add_split(mopt_tokenizer *tok, const char *path, const char *pattern, mopt_error *err) {
    if (tok->n_splits >= TOK_MAX_SPLITS) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: too many Split pre-tokenizers", path);
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &ec, &eo, NULL);
    if (!re) {
        char msg[128];
        pcre2_get_error_message(ec, (PCRE2_UCHAR *)msg, sizeof msg);
        return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: pre-tokenizer regex does not compile at offset %zu: %s", path,
                         (size_t)eo, msg);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* optional speed-up; the interpreter is the fallback */
    split_step *s = &tok->splits[tok->n_splits++];
    s->re = re;
    return MOPT_OK;
}

/* One component parser (pre-tokenizer, normalizer, decoder, post-processor). */
typedef mopt_status (*component_parser)(mopt_tokenizer *tok, const char *path, json_t *node, mopt_error *err);

/* {"type": "Sequence", KEY: [...]} nests components of one kind: each is parsed in turn. */
static mopt_status parse_sequence(component_parser parse, mopt_tokenizer *tok, const char *path, json_t *node,
                                  const char *key, mopt_error *err) {
    size_t i;
    json_t *p;
    json_array_foreach(json_object_get(node, key), i, p) {
        mopt_status st = parse(tok, path, p, err);
        if (st) return st;
    }
    return MOPT_OK;
}

/* The regex the ByteLevel pre-tokenizer uses when use_regex is true. */
static const char *const GPT2_SPLIT =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static mopt_status parse_pre_tokenizer(mopt_tokenizer *tok, const char *path, json_t *pt, mopt_error *err) {
    if (!pt || json_is_null(pt)) return MOPT_OK;
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (type && strcmp(type, "Sequence") == 0) return parse_sequence(parse_pre_tokenizer, tok, path, pt, "pretokenizers", err);
    if (type && strcmp(type, "ByteLevel") == 0) {
        tok->byte_level = true;
        tok->add_prefix_space = json_is_true(json_object_get(pt, "add_prefix_space"));
        json_t *ur = json_object_get(pt, "use_regex");
        if (!ur || json_is_true(ur)) return add_split(tok, path, GPT2_SPLIT, err);
        return MOPT_OK;
    }
    if (type && strcmp(type, "Split") == 0) {
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        if (!behavior || strcmp(behavior, "Isolated") != 0 || json_is_true(json_object_get(pt, "invert")))
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: Split pre-tokenizer behavior \"%s\" is not supported (Isolated)",
                             path, behavior ? behavior : "(missing)");
        json_t *pat = json_object_get(pt, "pattern");
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        if (!re) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: Split pre-tokenizer needs a Regex pattern", path);
        return add_split(tok, path, re, err);
    }
    return fail_type(path, "pre_tokenizer", type, err);
}

static mopt_status parse_normalizer(mopt_tokenizer *tok, const char *path, json_t *n, mopt_error *err) {
    if (!n || json_is_null(n)) return MOPT_OK;
    const char *type = json_string_value(json_object_get(n, "type"));
    if (type && strcmp(type, "Sequence") == 0) return parse_sequence(parse_normalizer, tok, path, n, "normalizers", err);
    if (type && strcmp(type, "Prepend") == 0) {
        const char *s = json_string_value(json_object_get(n, "prepend"));
        if (!s || strcmp(s, SPM_SPACE) != 0)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: Prepend normalizer supports only \"\\u2581\"", path);
        tok->norm_prepend_space_marker = true;
        return MOPT_OK;
    }
    if (type && strcmp(type, "Replace") == 0) {
        const char *from = json_string_value(json_object_get(json_object_get(n, "pattern"), "String"));
        const char *to = json_string_value(json_object_get(n, "content"));
        if (!from || !to || strcmp(from, " ") != 0 || strcmp(to, SPM_SPACE) != 0)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: Replace normalizer supports only \" \" -> \"\\u2581\"", path);
        tok->norm_replace_space = true;
        return MOPT_OK;
    }
    return fail_type(path, "normalizer", type, err);
}

static mopt_status parse_decoder(mopt_tokenizer *tok, const char *path, json_t *d, mopt_error *err) {
    if (!d || json_is_null(d)) return MOPT_OK;
    const char *type = json_string_value(json_object_get(d, "type"));
    if (type && strcmp(type, "Sequence") == 0) return parse_sequence(parse_decoder, tok, path, d, "decoders", err);
    if (type && strcmp(type, "ByteLevel") == 0) {
        tok->decoder = TOK_DECODER_BYTELEVEL;
        return MOPT_OK;
    }
    if (type && (strcmp(type, "Replace") == 0 || strcmp(type, "ByteFallback") == 0 || strcmp(type, "Fuse") == 0)) {
        tok->decoder = TOK_DECODER_SPM; /* ▁ -> space, <0xXX> -> byte, join */
        return MOPT_OK;
    }
    if (type && strcmp(type, "Strip") == 0) {
        const char *c = json_string_value(json_object_get(d, "content"));
        if (!c || strcmp(c, " ") != 0 || json_integer_value(json_object_get(d, "stop")) != 0)
            return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: Strip decoder supports only leading spaces", path);
        tok->strip_leading = (int32_t)json_integer_value(json_object_get(d, "start"));
        return MOPT_OK;
    }
    return fail_type(path, "decoder", type, err);
}

static mopt_status parse_template(mopt_tokenizer *tok, const char *path, json_t *pp, mopt_error *err) {
    if (!pp || json_is_null(pp)) return MOPT_OK;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (type && strcmp(type, "Sequence") == 0) return parse_sequence(parse_template, tok, path, pp, "processors", err);
    if (type && strcmp(type, "ByteLevel") == 0) return MOPT_OK; /* offsets only */
    if (!type || strcmp(type, "TemplateProcessing") != 0) return fail_type(path, "post_processor", type, err);
    json_t *single = json_object_get(pp, "single");
    json_t *specials = json_object_get(pp, "special_tokens");
    int seen_seq = 0;
    size_t i;
    json_t *item;
    json_array_foreach(single, i, item) {
        if (json_object_get(item, "Sequence")) {
            seen_seq = 1;
            continue;
        }
        json_t *sp = json_object_get(item, "SpecialToken");
        const char *name = json_string_value(json_object_get(sp, "id"));
        if (!name) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: post_processor item %zu is neither Sequence nor SpecialToken", path, i);
        json_t *ids = json_object_get(json_object_get(specials, name), "ids");
        if (!json_is_array(ids) || json_array_size(ids) == 0)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: post_processor special token \"%s\" has no ids", path, name);
        size_t k;
        json_t *idv;
        json_array_foreach(ids, k, idv) {
            int32_t id = (int32_t)json_integer_value(idv);
            if (id < 0 || id >= tok->n_vocab)
                return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: post_processor id %d outside the vocabulary", path, id);
            int32_t *arr = seen_seq ? tok->tmpl_post : tok->tmpl_pre;
            int32_t *cnt = seen_seq ? &tok->n_tmpl_post : &tok->n_tmpl_pre;
            if (*cnt >= TOK_MAX_TEMPLATE) return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: post_processor template too long", path);
            arr[(*cnt)++] = id;
        }
    }
    return MOPT_OK;
}

static int cmp_added(const void *a, const void *b) {
    const added_token *x = a, *y = b;
    return x->len != y->len ? (x->len < y->len ? 1 : -1) : 0;
}

static mopt_status set_token(mopt_tokenizer *tok, int32_t id, const char *s, size_t len) {
    if (tok->tokens[id]) return MOPT_OK;
    tok->tokens[id] = malloc(len + 1);
    if (!tok->tokens[id]) return MOPT_E_NOMEM;
    memcpy(tok->tokens[id], s, len);
    tok->tokens[id][len] = '\0';
    tok->token_len[id] = (uint32_t)len;
    return MOPT_OK;
}

static mopt_status load_vocab(mopt_tokenizer *tok, const char *path, json_t *model, json_t *added, mopt_error *err) {
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.vocab is not an object", path);
    int64_t max_id = -1;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 24))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.vocab[\"%s\"] is not a valid id", path, key);
        if (json_integer_value(v) > max_id) max_id = json_integer_value(v);
    }
    size_t i;
    json_t *a;
    json_array_foreach(added, i, a) {
        json_t *idv = json_object_get(a, "id");
        if (!json_is_integer(idv) || json_integer_value(idv) < 0 || json_integer_value(idv) > (1 << 24) ||
            !json_is_string(json_object_get(a, "content")))
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: added_tokens[%zu] needs an id and a content", path, i);
        if (json_integer_value(idv) > max_id) max_id = json_integer_value(idv);
    }
    if (max_id < 0) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: empty vocabulary", path);
    tok->n_vocab = (int32_t)max_id + 1;
    tok->tokens = calloc((size_t)tok->n_vocab, sizeof *tok->tokens);
    tok->token_len = calloc((size_t)tok->n_vocab, sizeof *tok->token_len);
    tok->is_special = calloc((size_t)tok->n_vocab, 1);
    tok->added = calloc(json_array_size(added) + 1, sizeof *tok->added);
    if (!tok->tokens || !tok->token_len || !tok->is_special || !tok->added)
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    json_object_foreach(vocab, key, v) {
        if (set_token(tok, (int32_t)json_integer_value(v), key, strlen(key)))
            return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    }
    json_array_foreach(added, i, a) {
        int32_t id = (int32_t)json_integer_value(json_object_get(a, "id"));
        const char *content = json_string_value(json_object_get(a, "content"));
        size_t len = json_string_length(json_object_get(a, "content"));
        if (set_token(tok, id, content, len)) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        if (len == 0) continue;
        added_token *t = &tok->added[tok->n_added++];
        t->content = tok->tokens[id];
        t->len = tok->token_len[id];
        t->id = id;
        t->special = json_is_true(json_object_get(a, "special"));
        tok->is_special[id] = t->special;
    }
    qsort(tok->added, (size_t)tok->n_added, sizeof *tok->added, cmp_added);
    if (!str_map_build(&tok->vocab, tok->tokens, tok->token_len, tok->n_vocab))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    return MOPT_OK;
}

static mopt_status load_merges(mopt_tokenizer *tok, const char *path, json_t *merges, mopt_error *err) {
    if (!json_is_array(merges)) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.merges is not an array", path);
    if (!pair_map_init(&tok->merges, (uint32_t)json_array_size(merges)))
        return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    size_t i;
    json_t *m;
    char buf[1024];
    json_array_foreach(merges, i, m) {
        const char *l, *r;
        size_t ll, rl;
        if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
            json_is_string(json_array_get(m, 1))) {
            l = json_string_value(json_array_get(m, 0));
            ll = json_string_length(json_array_get(m, 0));
            r = json_string_value(json_array_get(m, 1));
            rl = json_string_length(json_array_get(m, 1));
        } else if (json_is_string(m) && strchr(json_string_value(m), ' ')) {
            /* older files: "left right" */
            l = json_string_value(m);
            const char *sp = strchr(l, ' ');
            ll = (size_t)(sp - l);
            r = sp + 1;
            rl = strlen(r);
        } else {
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.merges[%zu] is not a pair", path, i);
        }
        if (ll + rl >= sizeof buf) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.merges[%zu] is too long", path, i);
        int32_t a = str_map_get(&tok->vocab, l, ll), b = str_map_get(&tok->vocab, r, rl);
        memcpy(buf, l, ll);
        memcpy(buf + ll, r, rl);
        int32_t c = str_map_get(&tok->vocab, buf, ll + rl);
        if (a < 0 || b < 0 || c < 0)
            return MOPT_FAIL(err, MOPT_E_FORMAT, "%s: model.merges[%zu] (\"%.*s\" \"%.*s\") uses a token missing from the vocabulary",
                             path, i, (int)ll, l, (int)rl, r);
        pair_map_put(&tok->merges, a, b, (int32_t)i, c);
    }
    return MOPT_OK;
}

/* transformers' tokenizer_config.json beside tokenizer.json: its chat_template
 * is the model's. Integers are read as reals (transformers spells out
 * model_max_length as a 31-digit integer). */
static mopt_status load_chat_template(mopt_tokenizer *tok, const char *path, mopt_error *err) {
    char cfg[4096];
    const char *slash = strrchr(path, '/');
    snprintf(cfg, sizeof cfg, "%.*stokenizer_config.json", slash ? (int)(slash - path + 1) : 0, path);
    if (access(cfg, F_OK)) return MOPT_OK;
    char *data;
    size_t len;
    mopt_status st = mopt_read_file(cfg, &data, &len, err);
    if (st) return st;
    json_error_t je;
    json_t *root = json_loadb(data, len, JSON_DECODE_INT_AS_REAL, &je);
    free(data);
    if (!root) return MOPT_FAIL(err, MOPT_E_FORMAT, "%s:%d:%d: malformed JSON: %s", cfg, je.line, je.column, je.text);
    json_t *t = json_object_get(root, "chat_template"), *text = json_is_string(t) ? t : NULL;
    for (size_t i = 0; json_is_array(t) && i < json_array_size(t); i++) { /* [{name, template}]: the "default" one */
        json_t *e = json_array_get(t, i), *name = json_object_get(e, "name");
        if (json_is_string(name) && !strcmp(json_string_value(name), "default")) text = json_object_get(e, "template");
    }
    if (!json_is_object(root) || (t && !json_is_null(t) && !json_is_string(text))) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: %s", cfg,
                       json_is_object(root) ? "chat_template must be a string or a list with a \"default\" {name, template}"
                                            : "not a JSON object");
        json_decref(root);
        return st;
    }
    if (text && !(tok->chat_template = strdup(json_string_value(text)))) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    json_decref(root);
    return st;
}

mopt_tokenizer *mopt_tokenizer_load_hf(const char *path, mopt_error *err) {
    json_t *root = mopt_json_load_file(path, err);
    if (!root) return NULL;
    mopt_tokenizer *tok = tok_hf_from_json(root, path, err);
    json_decref(root);
    if (tok && load_chat_template(tok, path, err)) {
        mopt_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

mopt_tokenizer *tok_hf_from_json(json_t *root, const char *path, mopt_error *err) {
    mopt_tokenizer *tok = tok_new(&tok_strategy_hf, path, err);
    mopt_status st = MOPT_OK;
    if (!tok) return NULL;
    json_t *model = json_object_get(root, "model");
    const char *mtype = json_string_value(json_object_get(model, "type"));
    if (!json_is_object(model)) {
        st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: missing object \"model\"", path);
        goto done;
    }
    if (mtype && strcmp(mtype, "BPE") != 0) {
        st = fail_type(path, "model", mtype, err);
        goto done;
    }
    if ((st = load_vocab(tok, path, model, json_object_get(root, "added_tokens"), err))) goto done;
    if ((st = load_merges(tok, path, json_object_get(model, "merges"), err))) goto done;
    tok->ignore_merges = json_is_true(json_object_get(model, "ignore_merges"));
    tok->byte_fallback = json_is_true(json_object_get(model, "byte_fallback"));
    const char *unk = json_string_value(json_object_get(model, "unk_token"));
    if (unk) tok->unk_id = str_map_get(&tok->vocab, unk, strlen(unk));
    if ((st = parse_normalizer(tok, path, json_object_get(root, "normalizer"), err))) goto done;
    if ((st = parse_pre_tokenizer(tok, path, json_object_get(root, "pre_tokenizer"), err))) goto done;
    tok->decoder = tok->byte_level ? TOK_DECODER_BYTELEVEL : TOK_DECODER_SPM;
    if ((st = parse_decoder(tok, path, json_object_get(root, "decoder"), err))) goto done;
    if ((st = parse_template(tok, path, json_object_get(root, "post_processor"), err))) goto done;

    /* Initial symbols for single bytes. */
    uint32_t cp[256];
    tok_byte_level_table(cp);
    for (int b = 0; b < 256; b++) {
        char s[8];
        size_t n;
        if (tok->byte_level) {
            n = utf8_put(s, cp[b]);
        } else {
            n = (size_t)snprintf(s, sizeof s, "<0x%02X>", b);
        }
        tok->byte_ids[b] = str_map_get(&tok->vocab, s, n);
    }
    if (tok->byte_level) {
        for (int b = 0; b < 256; b++)
            if (tok->byte_ids[b] < 0) {
                st = MOPT_FAIL(err, MOPT_E_FORMAT, "%s: byte-level vocabulary lacks the symbol for byte 0x%02x", path, b);
                goto done;
            }
    }
    /* BOS / EOS: the template's first special token, and the usual names. */
    if (tok->n_tmpl_pre) tok->bos_id = tok->tmpl_pre[0];
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>", "<|im_end|>", "<|eot_id|>"};
    for (size_t i = 0; i < sizeof eos_names / sizeof *eos_names && tok->eos_id < 0; i++)
        tok->eos_id = str_map_get(&tok->vocab, eos_names[i], strlen(eos_names[i]));
    if (!tok_build_pieces(tok)) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
done:
    if (st) {
        mopt_tokenizer_free(tok);
        return NULL;
    }
    return tok;
}

/* --- encoding --------------------------------------------------------------- */

/* Runs the BPE model on one pre-tokenized piece. */
static mopt_status encode_piece(const mopt_tokenizer *tok, const char *s, size_t n, id_vec *out, mopt_error *err) {
    if (n == 0) return MOPT_OK;
    id_vec syms = {0};
    mopt_status st = MOPT_OK;
    if (tok->byte_level) {
        if (tok->ignore_merges) {
            /* The whole piece, mapped to the byte alphabet, may be one token. */
            char stackbuf[256];
            char *mapped = n * 2 <= sizeof stackbuf ? stackbuf : malloc(n * 2);
            if (!mapped) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
            size_t m = 0;
            for (size_t i = 0; i < n; i++) {
                int32_t id = tok->byte_ids[(unsigned char)s[i]];
                memcpy(mapped + m, tok->tokens[id], tok->token_len[id]);
                m += tok->token_len[id];
            }
            int32_t whole = str_map_get(&tok->vocab, mapped, m);
            if (mapped != stackbuf) free(mapped);
            if (whole >= 0) return id_vec_push(out, whole) ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        }
        for (size_t i = 0; i < n; i++)
            if (!id_vec_push(&syms, tok->byte_ids[(unsigned char)s[i]])) st = MOPT_E_NOMEM;
    } else {
        if (tok->ignore_merges) {
            int32_t whole = str_map_get(&tok->vocab, s, n);
            if (whole >= 0) return id_vec_push(out, whole) ? MOPT_OK : MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        }
        /* characters; unknown ones fall back to <0xXX> byte tokens or <unk> */
        for (size_t i = 0; i < n && st == MOPT_OK;) {
            size_t cl = utf8_len((unsigned char)s[i]);
            if (i + cl > n) cl = n - i;
            int32_t id = str_map_get(&tok->vocab, s + i, cl);
            if (id >= 0) {
                if (!id_vec_push(&syms, id)) st = MOPT_E_NOMEM;
            } else if (tok->byte_fallback) {
                for (size_t k = 0; k < cl; k++)
                    if (!id_vec_push(&syms, tok->byte_ids[(unsigned char)s[i + k]])) st = MOPT_E_NOMEM;
            } else if (tok->unk_id >= 0) {
                if (!id_vec_push(&syms, tok->unk_id)) st = MOPT_E_NOMEM;
            } else {
                st = MOPT_FAIL(err, MOPT_E_INVALID, "character at byte %zu is not in the vocabulary and there is no <unk>", i);
            }
            i += cl;
        }
    }
    if (st == MOPT_OK && !tok_bpe_merge(tok, syms.v, syms.n, out)) st = mopt_interrupted() ? MOPT_E_INTERRUPTED : MOPT_E_NOMEM;
    free(syms.v);
    if (st == MOPT_E_NOMEM) MOPT_FAIL(err, st, "out of memory");
    if (st == MOPT_E_INTERRUPTED) MOPT_FAIL(err, st, "interrupted while tokenizing");
    return st;
}

/* Applies split step k (and the later ones) to s[0..n), matching into md[k]: the call's own match data, since one
 * tokenizer encodes on many threads at once (a server's connections) */
static mopt_status split_and_encode(const mopt_tokenizer *tok, pcre2_match_data *const *md, int k, const char *s, size_t n,
                                    id_vec *out, mopt_error *err) {
    if (k >= tok->n_splits) return encode_piece(tok, s, n, out, err);
    const split_step *sp = &tok->splits[k];
    size_t pos = 0, last = 0;
    while (pos <= n) {
        if (mopt_interrupted()) return MOPT_FAIL(err, MOPT_E_INTERRUPTED, "interrupted while tokenizing");
        int rc = pcre2_match(sp->re, (PCRE2_SPTR)s, n, pos, pos == 0 ? 0 : PCRE2_NO_UTF_CHECK, md[k], NULL);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            if (rc <= PCRE2_ERROR_UTF8_ERR1 && rc >= PCRE2_ERROR_UTF8_ERR21)
                return MOPT_FAIL(err, MOPT_E_INVALID, "text is not valid UTF-8 (near byte %zu)",
                                 (size_t)pcre2_get_startchar(md[k]));
            PCRE2_UCHAR why[120];
            if (pcre2_get_error_message(rc, why, sizeof why) < 0) snprintf((char *)why, sizeof why, "pcre2 error %d", rc);
            return MOPT_FAIL(err, rc == PCRE2_ERROR_MATCHLIMIT || rc == PCRE2_ERROR_DEPTHLIMIT ? MOPT_E_INVALID : MOPT_E_RUNTIME,
                             "%s: the pre-tokenizer regex (split %d) failed on the text near byte %zu: %s", tok->source, k, pos,
                             (const char *)why);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md[k]);
        size_t ms = ov[0], me = ov[1];
        if (me == ms) {
            /* empty match: step one character forward */
            pos = ms + (ms < n ? utf8_len((unsigned char)s[ms]) : 1);
            continue;
        }
        if (ms > last) {
            mopt_status st = split_and_encode(tok, md, k + 1, s + last, ms - last, out, err);
            if (st) return st;
        }
        mopt_status st = split_and_encode(tok, md, k + 1, s + ms, me - ms, out, err);
        if (st) return st;
        last = pos = me;
    }
    if (last < n) return split_and_encode(tok, md, k + 1, s + last, n - last, out, err);
    return MOPT_OK;
}

/* Normalizes one segment between added tokens, then pre-tokenizes and encodes it. */
static mopt_status encode_segment(const mopt_tokenizer *tok, pcre2_match_data *const *md, const char *s, size_t n, id_vec *out,
                                  mopt_error *err) {
    if (n == 0) return MOPT_OK;
    if (!tok->norm_prepend_space_marker && !tok->norm_replace_space && !tok->add_prefix_space)
        return split_and_encode(tok, md, 0, s, n, out, err);
    /* worst case every byte is a space that becomes a 3-byte ▁, plus the prefix */
    char *buf = malloc(n * 3 + 4);
    if (!buf) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    size_t m = 0;
    if (tok->norm_prepend_space_marker) {
        memcpy(buf, SPM_SPACE, 3);
        m = 3;
    }
    if (tok->add_prefix_space && s[0] != ' ') buf[m++] = ' ';
    for (size_t i = 0; i < n; i++) {
        if (tok->norm_replace_space && s[i] == ' ') {
            memcpy(buf + m, SPM_SPACE, 3);
            m += 3;
        } else {
            buf[m++] = s[i];
        }
    }
    mopt_status st = split_and_encode(tok, md, 0, buf, m, out, err);
    free(buf);
    return st;
}

static mopt_status hf_encode(const mopt_tokenizer *tok, pcre2_match_data *const *md, const char *text, size_t len, id_vec *out,
                             mopt_error *err) {
    size_t seg = 0, i = 0;
    while (i < len) {
        const added_token *hit = NULL;
        for (int32_t a = 0; a < tok->n_added; a++) {
            const added_token *t = &tok->added[a];
            if (t->content[0] == text[i] && t->len <= len - i && memcmp(text + i, t->content, t->len) == 0) {
                hit = t; /* longest first */
                break;
            }
        }
        if (!hit) {
            i++;
            continue;
        }
        mopt_status st = encode_segment(tok, md, text + seg, i - seg, out, err);
        if (st) return st;
        if (!id_vec_push(out, hit->id)) return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
        i += hit->len;
        seg = i;
    }
    return encode_segment(tok, md, text + seg, len - seg, out, err);
}

/* the post-processor's template ids around the text's */
static mopt_status encode(const mopt_tokenizer *tok, const char *text, size_t len, int add_special, id_vec *out, mopt_error *err) {
    mopt_status st = MOPT_OK;
    for (int32_t i = 0; add_special && i < tok->n_tmpl_pre; i++)
        if (!id_vec_push(out, tok->tmpl_pre[i])) st = MOPT_E_NOMEM;
    pcre2_match_data *md[TOK_MAX_SPLITS] = {0};
    for (int i = 0; st == MOPT_OK && i < tok->n_splits; i++)
        if (!(md[i] = pcre2_match_data_create_from_pattern(tok->splits[i].re, NULL))) st = MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
    if (st == MOPT_OK) st = hf_encode(tok, md, text, len, out, err);
    for (int i = 0; i < tok->n_splits; i++) pcre2_match_data_free(md[i]);
    for (int32_t i = 0; st == MOPT_OK && add_special && i < tok->n_tmpl_post; i++)
        if (!id_vec_push(out, tok->tmpl_post[i])) st = MOPT_E_NOMEM;
    return st;
}

/* a byte-level BPE is GPT-2's kind; GGUF has no form of the SentencePiece-style BPE of tokenizer.json */
static const char *ggml_model(const mopt_tokenizer *tok) { return tok->byte_level ? "gpt2" : NULL; }

const tok_strategy tok_strategy_hf = {"tokenizer.json", encode, ggml_model, false};

mopt_status mopt_tokenizer_hf_files(const mopt_tokenizer *tok, char **tokenizer_json, char **config_json, mopt_error *err) {
    *tokenizer_json = *config_json = NULL;
    if (!tok->hf_json)
        return MOPT_FAIL(err, MOPT_E_UNSUPPORTED, "%s: this tokenizer (%s) has no tokenizer.json form mopt writes", tok->source,
                         tok->scores ? "pieces with scores" : "read from its own files");
    json_t *cfg = json_pack("{s:s}", "tokenizer_class", "PreTrainedTokenizerFast");
    if (cfg && tok->bos_id >= 0 && tok->tokens[tok->bos_id])
        json_object_set_new(cfg, "bos_token", json_string(tok->tokens[tok->bos_id]));
    if (cfg && tok->eos_id >= 0 && tok->tokens[tok->eos_id])
        json_object_set_new(cfg, "eos_token", json_string(tok->tokens[tok->eos_id]));
    if (cfg && tok->chat_template) json_object_set_new(cfg, "chat_template", json_string(tok->chat_template));
    *config_json = cfg ? json_dumps(cfg, JSON_INDENT(2)) : NULL;
    json_decref(cfg);
    *tokenizer_json = *config_json ? strdup(tok->hf_json) : NULL;
    if (*tokenizer_json) return MOPT_OK;
    free(*config_json);
    *config_json = NULL;
    return MOPT_FAIL(err, MOPT_E_NOMEM, "out of memory");
}
