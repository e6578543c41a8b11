#pragma once
// commands: the one table of stage facts — every `mp3d` subcommand's name, entry point, whether
// it needs a config, the config keys (prefixes) it reads, its usage text and options. The command
// line (pipeline/main.c), the runner's dispatch and its stage signatures (pipeline/runner.c) all
// read it; nothing else lists the stages. Adding a subcommand is one row here.

#include <mpi.h>

#include "io/config.h"

typedef struct {
    const char *flag;   // "--out"
    const char *key;    // config key it sets
    const char *value;  // fixed value for switches (NULL = takes an argument)
    const char *help;
} cli_opt;

enum cfg_need { CFG_NONE = 0, CFG_OPTIONAL = 1, CFG_REQUIRED = 2 };
enum { CMD_MAX_OPTS = 8 };

typedef struct {
    const char *name;
    int (*run)(const pl_cfg *, MPI_Comm);   // collective over comm; returns the exit code
    enum cfg_need need;
    int writes_output;       // checks output.dir is writable before starting
    int in_pipeline;         // may be a stage's command in a pipeline config (`mp3d run`)
    const char *reads;       // config key prefixes it reads: what makes its output current (signatures)
    const char *positional;  // key for a positional argument instead of CONFIG (inspect)
    const char *summary;
    cli_opt opts[CMD_MAX_OPTS];
} mp3d_command;

extern const mp3d_command mp3d_commands[];
extern const int mp3d_ncommands;
// The row named `name`, NULL when there is none.
const mp3d_command *mp3d_command_find(const char *name);

// `mp3d run`: executes the stages a pipeline config lists (pipeline/runner.c). Collective over comm.
int pipeline_run(const pl_cfg *cfg, MPI_Comm comm);
