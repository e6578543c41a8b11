// params: named views over one parameter buffer (see params.h).
#include "nn/params.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/pl.h"

void nn_params_init(nn_params *p) { memset(p, 0, sizeof *p); }

void nn_params_free(nn_params *p) {
    if (!p) return;
    free(p->info);
    free(p->params);
    free(p->grads);
    free(p->momentum);
    free(p->buffers);
    memset(p, 0, sizeof *p);
}

int nn_params_add(nn_params *p, int *index, const char *name, enum nn_param_kind kind, int ndim,
                  const int64_t *shape, enum nn_init init, int64_t fan_in) {
    if (p->params || p->buffers)
        return pl_fail(PL_EINVAL, "params: '%s' added after nn_params_alloc", name);
    if (strlen(name) >= NN_NAME_MAX || ndim < 0 || ndim > 5)
        return pl_fail(PL_EINVAL, "params: entry '%s' (ndim %d) too long or too many dims", name, ndim);
    if (nn_params_find(p, name) >= 0) return pl_fail(PL_EINVAL, "params: duplicate name '%s'", name);
    if (p->n == p->cap) {
        int cap = p->cap ? 2 * p->cap : 64;
        nn_param_info *t = pl_realloc(p->info, (size_t)cap * sizeof *t, "param table");
        if (!t) return PL_ENOMEM;
        p->info = t;
        p->cap = cap;
    }
    nn_param_info *e = &p->info[p->n];
    memset(e, 0, sizeof *e);
    strcpy(e->name, name);
    e->ndim = ndim;
    e->count = 1;
    for (int i = 0; i < ndim; i++) {
        e->shape[i] = shape[i];
        e->count *= (size_t)shape[i];
    }
    e->kind = kind;
    e->init = init;
    e->fan_in = fan_in;
    size_t ln = strlen(name);
    e->role = kind == NN_PARAM && ln >= 5 && !strcmp(name + ln - 5, ".bias") ? NN_ROLE_BIAS : NN_ROLE_WEIGHT;
    size_t *total = kind == NN_PARAM ? &p->nparams : &p->nbuffers;
    e->offset = *total;
    *total += e->count;
    *index = p->n++;
    return 0;
}

void nn_params_set_role(nn_params *p, int index, enum nn_param_role role) {
    PL_ASSERT(index >= 0 && index < p->n);
    p->info[index].role = role;
}

int nn_params_alloc(nn_params *p) {
    size_t np = PL_MAX(p->nparams, (size_t)1), nb = PL_MAX(p->nbuffers, (size_t)1);
    p->params = pl_calloc(np, sizeof(float), "model params");
    p->grads = pl_calloc(np, sizeof(float), "model grads");
    p->momentum = pl_calloc(np, sizeof(float), "model momentum");
    p->buffers = pl_calloc(nb, sizeof(float), "model buffers");
    if (!p->params || !p->grads || !p->momentum || !p->buffers) return PL_ENOMEM;
    return 0;
}

float *nn_params_data(const nn_params *p, int index) {
    PL_ASSERT(index >= 0 && index < p->n && p->params);
    const nn_param_info *e = &p->info[index];
    return (e->kind == NN_PARAM ? p->params : p->buffers) + e->offset;
}

float *nn_params_grad(const nn_params *p, int index) {
    PL_ASSERT(index >= 0 && index < p->n && p->grads);
    const nn_param_info *e = &p->info[index];
    return e->kind == NN_PARAM ? p->grads + e->offset : NULL;
}

int nn_params_find(const nn_params *p, const char *name) {
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->info[i].name, name) == 0) return i;
    return -1;
}

void nn_params_reset(nn_params *p, uint64_t seed) {
    pl_rng rng;
    pl_rng_seed(&rng, seed);
    for (int i = 0; i < p->n; i++) {
        const nn_param_info *e = &p->info[i];
        float *d = nn_params_data(p, i);
        if (e->init == NN_INIT_FAN_IN_UNIFORM) {
            double bound = 1.0 / sqrt((double)PL_MAX(e->fan_in, 1));
            for (size_t j = 0; j < e->count; j++) d[j] = (float)pl_rng_range(&rng, -bound, bound);
        } else {
            float v = e->init == NN_INIT_ONES ? 1.0f : 0.0f;
            for (size_t j = 0; j < e->count; j++) d[j] = v;
        }
    }
    memset(p->grads, 0, p->nparams * sizeof(float));
    memset(p->momentum, 0, p->nparams * sizeof(float));
}
