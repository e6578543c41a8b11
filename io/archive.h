#pragma once
// archive: streamed reading of zip and tar archives through libarchive (a file on disk or an
// archive held in memory, e.g. an ImageNet synset tar inside ILSVRC2012_img_train.tar), and
// writing zip/tar archives (used by `mp3d synth`). Nothing is unpacked to disk.
// Entry names are validated: absolute paths, ".." components and empty names are rejected.

#include <stddef.h>
#include <stdint.h>

typedef struct arc_reader arc_reader;

int arc_open_file(arc_reader **r, const char *path);
int arc_open_memory(arc_reader **r, const void *buf, size_t len, const char *label); // buf must outlive r
// Entries arc_next skipped because their name was unsafe (empty, absolute, '..'); each is logged
// (WARN) with the archive and the name, and the entries after it are still read.
int arc_unsafe_skipped(const arc_reader *r);
// Advances to the next regular-file entry (directories are skipped).
// Returns 1 with *name (valid until the next call) and *size (-1 if unknown), 0 at the end,
// or a negative pl_err for a truncated/corrupt archive or an unsafe entry name; the message
// names the archive and the entry.
int arc_next(arc_reader *r, const char **name, int64_t *size);
// Reads the whole current entry into a new buffer (caller frees). Truncation is an error.
int arc_read_entry(arc_reader *r, uint8_t **buf, size_t *len);
void arc_close(arc_reader *r);                       // accepts NULL
const char *arc_label(const arc_reader *r);         // the path or label given at open
int arc_name_ok(const char *name);                   // 1 if safe, 0 otherwise

typedef struct arc_writer arc_writer;
// ARC_ZIP deflates every entry; ARC_ZIP_STORE stores them (already-compressed PNG/JPEG data).
enum arc_format { ARC_ZIP = 0, ARC_TAR = 1, ARC_ZIP_STORE = 2 };
// Writes to path + ".tmp" and renames to path on a successful close.
int arc_writer_open(arc_writer **w, const char *path, enum arc_format fmt);
int arc_writer_add(arc_writer *w, const char *name, const void *data, size_t len);
int arc_writer_close(arc_writer *w);                 // finishes and renames; accepts NULL
void arc_writer_abort(arc_writer *w);                // discards the temporary file; accepts NULL
// Writes an archive to memory (for tar-in-tar); *out is malloc'ed on close.
int arc_writer_open_memory(arc_writer **w, enum arc_format fmt);
int arc_writer_close_memory(arc_writer *w, uint8_t **out, size_t *len);
