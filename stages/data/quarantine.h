#pragma once
// quarantine: the list of inputs a stage skipped or patched (file, entry, reason), collected per
// rank and written once as OUTPUT_DIR/quarantine.csv by rank 0, sorted, so the list does not
// depend on the rank count. Rows of other stages already in the file are kept; a stage's own
// earlier rows are replaced. Columns: stage,file,entry,reason (CSV-quoted where needed).

#include <mpi.h>
#include <stdint.h>

typedef struct quarantine quarantine;

quarantine *quarantine_create(const char *stage);   // NULL on allocation failure
void quarantine_destroy(quarantine *q);             // accepts NULL
// Not collective. `skipped` = 1 if the sample was dropped, 0 if it was kept with a repair
// (e.g. a replaced neighbour slice); only skipped rows count towards max_bad_fraction.
int quarantine_add(quarantine *q, const char *file, const char *entry, const char *reason, int skipped);
int64_t quarantine_count(const quarantine *q);      // local rows
int64_t quarantine_skipped(const quarantine *q);    // local rows with skipped = 1
// Collective over comm: gathers every rank's rows to rank 0, which sorts them, drops exact
// duplicates and writes DIR/quarantine.csv atomically. *total (rows written for this stage) and
// *skipped (rows added with skipped = 1) may be NULL; every rank gets them. Returns the same code on every rank.
int quarantine_write(quarantine *q, const char *dir, MPI_Comm comm, int64_t *total, int64_t *skipped);
