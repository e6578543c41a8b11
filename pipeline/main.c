// mp3d: the command. Parses the command line, loads and validates the config, starts MPI,
// dispatches to one stage and turns its result into the exit code. It decides nothing else.
//
//   mp3d <subcommand> [CONFIG] [--set key=value ...] [subcommand options]
//
// Exit codes: 0 ok, 1 failed run, 2 usage/config error, 75 preempted after a checkpoint.
#include <cblas.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include <mpi.h>

#include "io/config.h"
#include "io/fileio.h"
#include "mp3d_git.h"   // MP3D_GIT, written at build time
#include "io/runlog.h"
#include "nn/conv3d_dnnl.h"
#include "nn/pl.h"
#include "pipeline/commands.h"
#include "stages/stages.h"
#include "stages/train/trainer.h"

#ifndef MP3D_VERSION
#define MP3D_VERSION "0.0.0"
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: mp3d <subcommand> [CONFIG] [--set key=value ...] [options]\n"
               "       mp3d <subcommand> --help | mp3d --help | mp3d --version\n\nsubcommands:\n");
    for (int i = 0; i < mp3d_ncommands; i++) fprintf(f, "  %-11s %s\n", mp3d_commands[i].name, mp3d_commands[i].summary);
    fprintf(f, "\nRun with mpirun -np N mp3d ... or srun mp3d ...; every rank gets the same arguments.\n"
               "Exit codes: 0 ok, 1 run failed, 2 usage or config error, %d preempted (checkpoint written).\n",
            MP3D_EXIT_PREEMPTED);
}

static void sub_usage(FILE *f, const mp3d_command *s) {
    if (s->positional)
        fprintf(f, "usage: mp3d %s FILE\n\n%s\n", s->name, s->summary);
    else
        fprintf(f, "usage: mp3d %s %s[--set key=value ...]%s\n\n%s\n", s->name,
                s->need == CFG_REQUIRED ? "CONFIG " : s->need == CFG_OPTIONAL ? "[CONFIG] " : "",
                s->opts[0].flag ? " [options]" : "", s->summary);
    fprintf(f, "\noptions:\n");
    if (!s->positional) {
        fprintf(f, "  %-20s %s\n", "--set key=value", "override a config key (validated like the file)");
        if (s->writes_output) fprintf(f, "  %-20s %s\n", "--force", "re-run even if the output is complete");
    }
    for (int i = 0; i < CMD_MAX_OPTS && s->opts[i].flag; i++) {
        char left[64];
        snprintf(left, sizeof left, "%s%s", s->opts[i].flag, s->opts[i].value ? "" : " X");
        fprintf(f, "  %-20s %s (%s)\n", left, s->opts[i].help, s->opts[i].key);
    }
    fprintf(f, "  %-20s %s\n", "--help", "this text");
}

typedef struct {
    const mp3d_command *sub;
    const char *config;
    char **sets;   // "key=value"
    int nsets;
} cli_args;

// Parses argv; returns -1 to continue, or an exit code (help/version/usage) — before MPI_Init.
static int parse_cli(cli_args *a, int argc, char **argv) {
    memset(a, 0, sizeof *a);
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) { usage(stdout); return 0; }
    if (!strcmp(argv[1], "--version")) { printf("mp3d %s (git %s)\n", MP3D_VERSION, MP3D_GIT); return 0; }
    for (int i = 0; i < mp3d_ncommands; i++)
        if (!strcmp(argv[1], mp3d_commands[i].name)) a->sub = &mp3d_commands[i];
    if (!a->sub) {
        fprintf(stderr, "mp3d: unknown subcommand '%s'\n\n", argv[1]);
        usage(stderr);
        return 2;
    }
    a->sets = calloc((size_t)argc * 2 + 2, sizeof(char *));
    if (!a->sets) return 1;
    for (int i = 2; i < argc; i++) {
        const char *arg = argv[i];
        if (!strcmp(arg, "--help") || !strcmp(arg, "-h")) { sub_usage(stdout, a->sub); return 0; }
        if (!strcmp(arg, "--set")) {
            if (i + 1 >= argc) { fprintf(stderr, "mp3d %s: --set needs key=value\n", a->sub->name); return 2; }
            a->sets[a->nsets++] = strdup(argv[++i]);
            continue;
        }
        if (!strncmp(arg, "--set=", 6)) { a->sets[a->nsets++] = strdup(arg + 6); continue; }
        if (!strcmp(arg, "--force") && a->sub->writes_output) { a->sets[a->nsets++] = strdup("run.force=true"); continue; }
        const cli_opt *o = NULL;
        for (int j = 0; j < CMD_MAX_OPTS && a->sub->opts[j].flag; j++)
            if (!strcmp(arg, a->sub->opts[j].flag)) o = &a->sub->opts[j];
        if (o) {
            const char *v = o->value;
            if (!v) {
                if (i + 1 >= argc) { fprintf(stderr, "mp3d %s: %s needs a value\n", a->sub->name, arg); return 2; }
                v = argv[++i];
            }
            size_t n = strlen(o->key) + strlen(v) + 2;
            char *s = malloc(n);
            if (!s) return 1;
            snprintf(s, n, "%s=%s", o->key, v);
            a->sets[a->nsets++] = s;
            continue;
        }
        if (arg[0] == '-') {
            fprintf(stderr, "mp3d %s: unknown option '%s'\n\n", a->sub->name, arg);
            sub_usage(stderr, a->sub);
            return 2;
        }
        if (a->sub->positional && !a->config) {
            size_t n = strlen(a->sub->positional) + strlen(arg) + 2;
            char *s = malloc(n);
            if (!s) return 1;
            snprintf(s, n, "%s=%s", a->sub->positional, arg);
            a->sets[a->nsets++] = s;
            a->config = "";
            continue;
        }
        if (a->config || a->sub->need == CFG_NONE) {
            fprintf(stderr, "mp3d %s: unexpected argument '%s'\n\n", a->sub->name, arg);
            sub_usage(stderr, a->sub);
            return 2;
        }
        a->config = arg;
    }
    if (a->sub->positional && !a->config) {
        fprintf(stderr, "mp3d %s: missing FILE\n\n", a->sub->name);
        sub_usage(stderr, a->sub);
        return 2;
    }
    if (a->sub->need == CFG_REQUIRED && !a->config) {
        fprintf(stderr, "mp3d %s: missing CONFIG (a libconfig file, see configs/)\n\n", a->sub->name);
        sub_usage(stderr, a->sub);
        return 2;
    }
    if (a->config && !a->config[0]) a->config = NULL;
    return -1;
}

static int level_of(const char *s) {
    if (!strcmp(s, "debug")) return PL_DEBUG;
    if (!strcmp(s, "warn")) return PL_WARN;
    if (!strcmp(s, "error")) return PL_ERROR;
    return PL_INFO;
}

// oneDNN runs on OpenMP (libgomp), whose idle threads spin by default (~300k iterations) between
// regions, against nn/parallel.c's pool and OpenBLAS on the same cores: measured 1.8-2.3x the CPU
// time of a ResNet3D-18 step at 2 threads on a loaded machine (issue 15). libgomp reads
// OMP_WAIT_POLICY once, when it loads before main, so when it is unset this sets it to passive and
// starts the program again (same pid, before MPI_Init; a value the user set is kept; if exec
// fails we carry on as we are). SIGTERM and
// SIGUSR1 are held (blocked; the mask and pending signals survive exec) until the new image has
// installed the trainer's handlers, so a preemption signal during start-up still checkpoints.
static void reexec_with_passive_omp(char **argv) {
    if (!conv3d_dnnl_available() || getenv("OMP_WAIT_POLICY")) return;
    sigset_t hold, old;
    sigemptyset(&hold);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGUSR1);
    sigprocmask(SIG_BLOCK, &hold, &old);
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv("MP3D_SIGNALS_HELD", "1", 1);
    execv("/proc/self/exe", argv);
    unsetenv("MP3D_SIGNALS_HELD");
    sigprocmask(SIG_SETMASK, &old, NULL);
}

// The other half: once the handlers are in place, deliver what arrived meanwhile.
static void release_held_signals(void) {
    if (!getenv("MP3D_SIGNALS_HELD")) return;
    unsetenv("MP3D_SIGNALS_HELD");
    sigset_t hold;
    sigemptyset(&hold);
    sigaddset(&hold, SIGTERM);
    sigaddset(&hold, SIGUSR1);
    sigprocmask(SIG_UNBLOCK, &hold, NULL);
}

// OpenBLAS picks its kernels from the CPU model; a model newer than the library (Debian 12's
// 0.3.21 on Xeon Sapphire/Emerald Rapids) falls back to the generic SSE3 `Prescott` kernels,
// 4-7x slower than the AVX-512 ones (22 vs 95 GFLOP/s measured on such a Xeon). Rank 0 says so
// once when nobody forced a core.
static void blas_core_check(void) {
    const char *core = openblas_get_corename();
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem",
                                          "Katmai", "Coppermine", "Northwood", "Banias", "Atom"};
    int old = 0;
    for (size_t i = 0; core && i < sizeof generic / sizeof generic[0]; i++)
        if (strcasecmp(core, generic[i]) == 0) old = 1;
    __builtin_cpu_init();
    if (!old || getenv("OPENBLAS_CORETYPE") || !__builtin_cpu_supports("avx2")) return;
    const char *fix = __builtin_cpu_supports("avx512f") ? "SkylakeX" : "Haswell";
    if (pl_log_rank() <= 0)
        LOG_WARN("blas: OpenBLAS does not know this CPU and runs its generic '%s' kernels although the CPU "
                 "has %s; export OPENBLAS_CORETYPE=%s for the OpenBLAS-bound parts (nn.conv_engine gemm); "
                 "nn.conv_engine dnnl runs convolutions and linear layers on oneDNN, which is unaffected",
                 core, __builtin_cpu_supports("avx512f") ? "AVX-512" : "AVX2", fix);
}

int main(int argc, char **argv) {
    reexec_with_passive_omp(argv);
    cli_args a;
    int code = parse_cli(&a, argc, argv);
    if (code >= 0) return code;
    // A preemption signal during start-up must still end in a checkpoint and exit 75.
    if (!strcmp(a.sub->name, "train")) trainer_install_signals();
    release_held_signals();

    MPI_Init(&argc, &argv);
    // MPI errors are fatal (the policy in stages/stages.h): stated here, not left to the default.
    MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_ARE_FATAL);
    int rank = 0, size = 1;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    pl_log_set_rank(rank);
    // Every rank reads the same config and reaches the same verdict; rank 0 says it.
    if (rank != 0) pl_quiet_begin();

    pl_cfg *cfg = NULL;
    double t0 = pl_time();
    int rc = cfg_load(&cfg, a.config, (const char *const *)a.sets, a.nsets);
    if (!rc && a.sub->run != pipeline_run) rc = cfg_resolve_anchors(cfg);
    if (rc) {
        code = MP3D_EXIT_USAGE;
        goto done;
    }
    pl_log_set_level(level_of(cfg_str(cfg, "log.level")));
    if (rank != 0) pl_quiet_end();
    LOG0("mp3d:%s version:%s git:%s ranks:%d config:%s", a.sub->name, MP3D_VERSION, MP3D_GIT, size,
         a.config ? a.config : "-");
    // the BLAS kernels this process runs with (OPENBLAS_CORETYPE can force older ones)
    LOG0("blas: core:%s threads:%d config:%s", openblas_get_corename(), openblas_get_num_threads(), openblas_get_config());
    blas_core_check();
    if (a.sub->need != CFG_NONE) cfg_log(cfg);

    pl_metrics *metrics = NULL;
    if (a.sub->writes_output) {
        if (cfg_require(cfg, "output.dir")) { code = MP3D_EXIT_USAGE; goto done; }
        // Rank 0 creates and probes the folder; everyone learns the verdict.
        int ok = 1;
        if (rank == 0) ok = pl_dir_writable(cfg_str(cfg, "output.dir")) == 0;
        MPI_Bcast(&ok, 1, MPI_INT, 0, MPI_COMM_WORLD);
        if (!ok) { code = MP3D_EXIT_FAIL; goto done; }
        if (metrics_open(&metrics, cfg_str(cfg, "output.dir"), rank == 0) == 0)
            metrics_write(metrics, a.sub->name, "\"event\":\"start\",\"ranks\":%d,\"version\":\"%s\",\"git\":\"%s\"",
                          size, MP3D_VERSION, MP3D_GIT);
    }

    code = a.sub->run(cfg, MPI_COMM_WORLD);
    // Stages return the same code on every rank; take the worst in case one did not.
    MPI_Allreduce(MPI_IN_PLACE, &code, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    LOG0("mp3d:%s exit:%d elapsed:%.2fs", a.sub->name, code, pl_time() - t0);
    // mpirun answers a SIGTERM of its own with exit 1 whatever the ranks return (the ranks got
    // the TERM too and exited 75 after a checkpoint): slurm/common.sh reads the real code here.
    const char *exit_file = getenv("MP3D_EXIT_FILE");
    if (rank == 0 && exit_file && exit_file[0]) {
        char line[32];
        int n = snprintf(line, sizeof line, "%d\n", code);
        if (pl_write_file_atomic(exit_file, line, (size_t)n)) LOG_WARN("mp3d: cannot write MP3D_EXIT_FILE %s", exit_file);
    }
    if (metrics) {
        metrics_write(metrics, a.sub->name, "\"event\":\"end\",\"exit\":%d,\"elapsed_s\":%.3f", code, pl_time() - t0);
        metrics_close(metrics);
    }

done:
    cfg_destroy(cfg);
    for (int i = 0; i < a.nsets; i++) free(a.sets[i]);
    free(a.sets);
    MPI_Finalize();
    return code;
}
