#include "pipeline/commands.h"

#include <string.h>

#include "stages/stages.h"
#include "stages/train/import.h"

const mp3d_command mp3d_commands[] = {
    {"synth", stage_synth_run, CFG_OPTIONAL, 1, 1, "synth.,output.,run.seed,run.max_bad_fraction", NULL,
     "write a deterministic demo cohort in the public DeepLesion / ImageNet / COCO layouts",
     {{"--out", "output.dir", NULL, "output folder"},
      {"--scale", "synth.scale", NULL, "tiny | small | medium"},
      {"--seed", "run.seed", NULL, "random seed"},
      {"--datasets", "synth.datasets", NULL, "comma-separated subset of deeplesion,imagenet,coco"}}},
    {"preprocess", stage_preprocess_run, CFG_REQUIRED, 1, 1, STAGE_CONTENT_KEYS_PREPROCESS ",output.,run.seed,run.max_bad_fraction",
     NULL, "DeepLesion archives + DL_info.csv -> 9-slice int16 HDF5 shards, one per split", {{0}}},
    {"vdt", stage_vdt_run, CFG_REQUIRED, 1, 1, STAGE_CONTENT_KEYS_VDT ",output.,run.seed,run.max_bad_fraction", NULL,
     "ImageNet / COCO archives -> pseudo-3D (1, 3, S, S) uint8 HDF5 shards", {{0}}},
    {"train", stage_train_run, CFG_REQUIRED, 1, 1, "input.,output.,model.,train.,det.,eval.,nn.,run.seed", NULL,
     "data-parallel training (VDT pre-training or lesion-detector fine-tuning)", {{0}}},
    {"anchors", stage_anchors_run, CFG_REQUIRED, 1, 1, "input.,output.,model.,det.", NULL,
     "derive anchor ratios and scales from the training boxes", {{0}}},
    {"evaluate", stage_evaluate_run, CFG_REQUIRED, 1, 1, "input.,output.,eval.,det.,model.,nn.,run.seed", NULL,
     "detect on a split, score with FROC, write the report", {{0}}},
    {"infer", stage_infer_run, CFG_OPTIONAL, 0, 1, "input.,output.,infer.,model.,nn.", NULL,
     "run a checkpoint on /input of an HDF5 file, write /output",
     {{"--checkpoint", "infer.checkpoint", NULL, "checkpoint (.h5)"},
      {"--input", "infer.input", NULL, "HDF5 with /input (N, 1, D, H, W) float32"},
      {"--output", "infer.output", NULL, "HDF5 to write /output to"}}},
    {"froc", stage_froc_run, CFG_OPTIONAL, 0, 1, "input.,output.,eval.", NULL,
     "score a detections CSV against DL_info.csv with the DeepLesion FROC protocol",
     {{"--truth", "eval.truth", NULL, "DL_info.csv"},
      {"--detections", "eval.detections", NULL, "CSV File_name,x1,y1,x2,y2,score"},
      {"--split", "eval.split", NULL, "train | val | test | all"},
      {"--json", "eval.json", "true", "print the figures as one JSON object on stdout"},
      {"--out", "output.dir", NULL, "also write the report under this folder"},
      {"--iou-continuous", "eval.iou_plus1", "false", "IoU without +1 on widths (MP3D)"},
      {"--keep-noisy", "eval.noisy", "keep", "keep lesions flagged Possibly_noisy (MP3D)"},
      {"--fp-rule", "eval.fp_rule", NULL, "before_next (MULAN) | first_at (3DCE/MP3D)"}}},
    {"import", stage_import_run, CFG_OPTIONAL, 0, 1, "import.,model.,det.,train.task,run.seed", NULL,
     "read a PyTorch .pth (mmdet / mmcls / plain state dict) into an mp3d checkpoint, no Python",
     {{"--from", "import.from", NULL, ".pth file (zip or legacy torch.save format)"},
      {"--out", "import.out", NULL, "mp3d checkpoint (.h5) to write"},
      {"--arch", "model.arch", NULL, "resnet3d18 | resnet3dv1c18 | p3d63"},
      {"--map", "import.map", NULL, "auto | mmdet | mmcls | plain"}}},
    {"export", stage_export_run, CFG_OPTIONAL, 0, 1, "export.", NULL,
     "write an mp3d checkpoint's parameters as a PyTorch state dict (.pth, zip format)",
     {{"--checkpoint", "export.checkpoint", NULL, "mp3d checkpoint (.h5)"},
      {"--out", "export.out", NULL, ".pth file to write"},
      {"--map", "export.map", NULL, "plain | mmdet | mmcls"}}},
    {"inspect", stage_inspect_run, CFG_NONE, 0, 0, "", "inspect.file",
     "summarise any file mp3d wrote (shards, checkpoints, detections)", {{0}}},
    {"run", pipeline_run, CFG_REQUIRED, 0, 0, "", NULL,
     "run the stages a pipeline config lists, skipping complete ones",
     {{"--dry-run", "pipeline.dry_run", "true", "print the plan and why each stage would run"},
      {"--only", "pipeline.only", NULL, "run only these stages (comma-separated names)"},
      {"--force", "run.force", "true", "re-run every stage even if complete"}}},
};
const int mp3d_ncommands = (int)(sizeof mp3d_commands / sizeof mp3d_commands[0]);

const mp3d_command *mp3d_command_find(const char *name) {
    for (int i = 0; i < mp3d_ncommands; i++)
        if (!strcmp(mp3d_commands[i].name, name)) return &mp3d_commands[i];
    return NULL;
}
