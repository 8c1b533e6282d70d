#include "run_setup.h"

#include <stdlib.h>
#include <string.h>

#include "hf_hub.h"
#include "token_file.h"

static int build_recipe(const qc_cmd *cmd, qc_opt *opts, const char *recipe_path, qc_recipe *r) {
    qc_status st = recipe_path ? qc_recipe_load(r, recipe_path) : QC_OK;
    if (st != QC_OK) return qc_cli_fail(cmd, st);
    static const char *const keys[] = {"model", "out", "method", "bits", "group-size", "damp", "calib",
                                       "sampling", "nsamples", "seqlen", "seed", "format", "device", "awq-scale",
                                       "awq-search-samples", "moe-min-tokens", "moe-low-coverage"};
    char origin[64];
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        qc_opt *o = NULL;
        for (qc_opt *p = opts; p->name; p++)
            if (strcmp(p->name, keys[i]) == 0) o = p;
        if (!o || !o->set) continue;
        snprintf(origin, sizeof origin, "--%s", keys[i]);
        if ((st = qc_recipe_set(r, keys[i], o->str, origin))) return qc_cli_usage_error(cmd, "%s", qc_last_error());
    }
    static const struct { const char *flag, *key, *value; } flags[] = {
        {"sym", "sym", "true"}, {"asym", "sym", "false"}, {"act-order", "act_order", "true"},
        {"static-groups", "static_groups", "true"}, {"no-true-sequential", "true_sequential", "false"},
        {"no-awq-clip", "awq_clip", "false"}, {"mse", "mse", "true"},
    };
    bool sym = false, asym = false;
    for (size_t i = 0; i < sizeof flags / sizeof flags[0]; i++) {
        qc_opt *o = NULL;
        for (qc_opt *p = opts; p->name; p++)
            if (strcmp(p->name, flags[i].flag) == 0) o = p;
        if (!o || !o->set) continue;
        sym |= strcmp(flags[i].flag, "sym") == 0;
        asym |= strcmp(flags[i].flag, "asym") == 0;
        snprintf(origin, sizeof origin, "--%s", flags[i].flag);
        if ((st = qc_recipe_set(r, flags[i].key, flags[i].value, origin)))
            return qc_cli_usage_error(cmd, "%s", qc_last_error());
    }
    if (sym && asym) return qc_cli_usage_error(cmd, "--sym and --asym contradict each other");
    if ((st = qc_recipe_validate(r))) return qc_cli_usage_error(cmd, "%s", qc_last_error());
    return -1;
}

int qc_run_recipe(const qc_cmd *cmd, qc_opt *opts, int argc, char **argv, qc_recipe *r) {
    const char *pos[1];
    int npos;
    qc_recipe_init(r);
    int rc = qc_cli_parse(cmd, opts, argc, argv, pos, 1, &npos);
    if (rc < 0) rc = build_recipe(cmd, opts, npos ? pos[0] : NULL, r);
    if (rc >= 0) qc_recipe_free(r);
    return rc;
}

qc_status qc_run_resolve_model(const char *ref, char **dir) {
    if (qc_hf_is_ref(ref)) return qc_hf_resolve(ref, NULL, dir);
    if (!qc_dir_exists(ref)) return qc_fail(QC_ERR_IO, "%s: model directory not found", ref);
    *dir = qc_strdup(ref);
    return *dir ? QC_OK : qc_fail(QC_ERR_NOMEM, "out of memory");
}

qc_status qc_run_calib(const qc_recipe *r, const qc_tokenizer *tok, bool quiet, qc_calib_set *set) {
    qc_calib_src src[QC_RECIPE_MAX_SOURCES];
    char *paths[QC_RECIPE_MAX_SOURCES] = {0};
    qc_status st = QC_OK;
    for (int i = 0; i < r->n_calib && st == QC_OK; i++) {
        const qc_calib_source *s = &r->calib[i];
        if (qc_hf_is_ref(s->path)) st = qc_hf_resolve(s->path, NULL, &paths[i]);
        else paths[i] = qc_strdup(s->path);
        if (st) break;
        memset(&src[i], 0, sizeof src[i]);
        src[i].path = paths[i];
        if (!qc_docs_format_parse(s->format ? s->format : "auto", &src[i].docs.format))
            st = qc_fail(QC_ERR_ARG, "calibration source %s: unknown format '%s'", s->path, s->format);
        src[i].docs.field = s->field;
        src[i].docs.split = s->split;
        src[i].docs.holdout = s->holdout; /* held-out documents are never sampled */
        src[i].weight = s->weight;
        if (!quiet && st == QC_OK)
            QC_LOGI("calibration source %d/%d: %s%s%s", i + 1, r->n_calib, s->path,
                    strcmp(s->path, paths[i]) ? " -> " : "", strcmp(s->path, paths[i]) ? paths[i] : "");
    }
    if (st == QC_OK) {
        qc_calib_opts o = {.sampling = strcmp(r->sampling, "awq") == 0 ? QC_SAMPLING_AWQ : QC_SAMPLING_GPTQ,
                           .nsamples = r->nsamples, .seqlen = r->seqlen, .seed = r->seed};
        double t0 = qc_time_now();
        st = qc_calib_sample(src, r->n_calib, tok, &o, set);
        if (st == QC_OK && !quiet) {
            for (int i = 0; i < set->n_src; i++)
                QC_LOGI("  source %d: %lld documents, %lld eligible, %d windows, %lld tokens", i + 1,
                        (long long)set->src[i].docs, (long long)set->src[i].eligible, set->src[i].samples,
                        (long long)set->src[i].tokens);
            QC_LOGI("calibration: %d x %d tokens (%s sampling, seed %llu) in %.1f s", set->nsamples, set->seqlen,
                    r->sampling, (unsigned long long)r->seed, qc_time_now() - t0);
        }
    }
    for (int i = 0; i < r->n_calib; i++) free(paths[i]);
    return st;
}

qc_status qc_run_calib_load(const qc_recipe *r, const char *path, bool quiet, qc_calib_set *set) {
    qc_token_file_info info;
    qc_status st = qc_token_file_read(path, set, &info);
    if (st) return st;
    qc_sampling want = strcmp(r->sampling, "awq") == 0 ? QC_SAMPLING_AWQ : QC_SAMPLING_GPTQ;
    if (info.sampling != want || info.nsamples != r->nsamples || set->seqlen != r->seqlen || info.seed != r->seed) {
        st = qc_fail(QC_ERR_FORMAT, "%s: windows of %s sampling, nsamples %d, seqlen %d, seed %llu; the recipe asks for "
                     "%s sampling, nsamples %d, seqlen %d, seed %llu", path, info.sampling == QC_SAMPLING_AWQ ? "awq" : "gptq",
                     info.nsamples, set->seqlen, (unsigned long long)info.seed, r->sampling, r->nsamples, r->seqlen,
                     (unsigned long long)r->seed);
        qc_calib_set_free(set);
        return st;
    }
    if (!quiet)
        QC_LOGI("calibration: %d x %d tokens read from %s (%s sampling, seed %llu)", set->nsamples, set->seqlen, path,
                r->sampling, (unsigned long long)r->seed);
    return QC_OK;
}

qc_status qc_run_calib_check_vocab(const qc_calib_set *set, int vocab, const char *what) {
    size_t n = (size_t)set->nsamples * (size_t)set->seqlen;
    for (size_t i = 0; i < n; i++)
        if (set->ids[i] < 0 || set->ids[i] >= vocab)
            return qc_fail(QC_ERR_FORMAT, "%s: window %zu, token %zu: id %d is outside the model's vocabulary of %d", what,
                           i / (size_t)set->seqlen, i % (size_t)set->seqlen, (int)set->ids[i], vocab);
    return QC_OK;
}
