// The one schema table: every config key mp3d knows, its type, range, default and meaning.
// Defaults live here and nowhere else; a NULL default means "required by the stages that use
// it" (cfg_require). Keep the table sorted by section; add keys next to their section.
#include "io/config.h"

#define BIG 1e18
#define ANY NULL

const cfg_key cfg_schema[] = {
    // --- where things are -------------------------------------------------------------
    {"input.root", CFG_STRING, NULL, 0, 0, ANY, "folder holding the stage's input (dataset files as downloaded, or shards)"},
    {"output.dir", CFG_STRING, NULL, 0, 0, ANY, "folder the stage writes under (created if missing)"},
    {"run.seed", CFG_INT, "1", 0, 4294967295.0, ANY, "seed of every random choice of the run"},
    {"run.force", CFG_BOOL, "false", 0, 0, ANY, "re-run a stage even if its output is complete"},
    {"run.max_bad_fraction", CFG_FLOAT, "0.05", 0, 1, ANY, "fraction of skipped samples above which a stage fails"},
    {"log.level", CFG_STRING, "\"info\"", 0, 0, "debug|info|warn|error", "lowest level logged"},
    {"log.progress_interval", CFG_FLOAT, "10", 0.1, 3600, ANY, "seconds between progress lines in batch logs"},

    // --- synth: the demo cohort --------------------------------------------------------
    {"synth.scale", CFG_STRING, "\"small\"", 0, 0, "tiny|small|medium", "size of the generated cohort"},
    {"synth.datasets", CFG_STRING, "\"deeplesion,imagenet,coco\"", 0, 0, ANY, "which layouts to write (comma-separated)"},
    {"synth.imagenet_side_min", CFG_INT, "0", 0, 4096, ANY, "ImageNet image sides drawn from [min, max] px; 0 = the scale's (real ImageNet: 333..500)"},
    {"synth.imagenet_side_max", CFG_INT, "0", 0, 4096, ANY, "see synth.imagenet_side_min"},

    // --- preprocess: DeepLesion -> HDF5 ------------------------------------------------
    {"preprocess.num_slices", CFG_INT, "9", 1, 63, ANY, "slices per sample, odd, centred on the key slice"},
    {"preprocess.slice_interval_mm", CFG_FLOAT, "2.5", 0.1, 20, ANY, "z spacing of the stored slices (linear interpolation)"},
    {"preprocess.hu_min", CFG_FLOAT, "-1024", -32768, 32767, ANY, "HU clip low"},
    {"preprocess.hu_max", CFG_FLOAT, "1050", -32768, 32767, ANY, "HU clip high"},
    {"preprocess.spacing_mm", CFG_FLOAT, "0", 0, 10, ANY, "xy resampling to this mm/pixel; 0 = keep the original spacing"},
    {"preprocess.size", CFG_INT, "0", 0, 4096, ANY, "resize/pad to size x size after resampling; 0 = keep"},
    {"preprocess.splits", CFG_STRING, "\"train,val,test\"", 0, 0, ANY, "splits to write, one file each"},

    // --- vdt: RGB -> pseudo-3D ---------------------------------------------------------
    {"vdt.dataset", CFG_STRING, "\"imagenet\"", 0, 0, "imagenet|coco", "which dataset layout input.root holds"},
    {"vdt.short_side", CFG_INT, "256", 8, 4096, ANY, "resize the short side to this (antialiased)"},
    {"vdt.crop", CFG_INT, "256", 8, 4096, ANY, "centre crop size (square)"},
    {"vdt.min_box_fraction", CFG_FLOAT, "0.5", 0, 1, ANY, "COCO: drop a box when less than this fraction of its area survives the crop"},
    {"vdt.max_megapixels", CFG_FLOAT, "100", 0.01, 10000, ANY, "largest image decoded (width x height, millions of pixels); larger ones are quarantined"},
    {"vdt.splits", CFG_STRING, "\"train,val\"", 0, 0, ANY, "splits to write, one file each"},

    // --- model -------------------------------------------------------------------------
    {"model.arch", CFG_STRING, "\"resnet3dv1c18\"", 0, 0, "resnet3d18|resnet3dv1c18|p3d63", "backbone"},
    {"model.width", CFG_FLOAT, "1", 0.03125, 4, ANY, "width multiplier (64 base channels x width)"},
    {"model.norm", CFG_STRING, "\"bn\"", 0, 0, "bn|gn", "BatchNorm3d or GroupNorm"},
    {"model.gn_groups", CFG_INT, "32", 1, 1024, ANY, "GroupNorm groups"},
    {"model.num_classes", CFG_INT, "1000", 1, 100000, ANY, "classification classes"},
    {"model.init_from", CFG_STRING, "\"\"", 0, 0, ANY, "checkpoint (or folder: its newest) whose parameters are loaded by name before training"},

    // --- train -------------------------------------------------------------------------
    {"train.task", CFG_STRING, "\"classify\"", 0, 0, "classify|detect|detect_coco", "what the trainer optimises (detect_coco: multi-class detection pre-training on mp3d vdt COCO shards)"},
    {"train.batch", CFG_INT, "256", 1, 1 << 20, ANY, "global batch size (all ranks together)"},
    {"train.batch_fit", CFG_BOOL, "false", 0, 0, ANY, "when the training set has fewer samples than train.batch, train with batches of all its samples (lr scaled with the batch) instead of stopping: a demo recipe that also runs on a tiny cohort"},
    {"train.epochs", CFG_FLOAT, "100", 0, 1e6, ANY, "training length in epochs"},
    {"train.max_steps", CFG_INT, "0", 0, BIG, ANY, "stop after this many steps; 0 = by epochs"},
    {"train.max_minutes", CFG_FLOAT, "0", 0, 1e7, ANY, "stop (with a checkpoint) after this wall time; 0 = no limit"},
    {"train.lr", CFG_FLOAT, "0.1", 1e-9, 100, ANY, "base learning rate for train.lr_batch"},
    {"train.lr_batch", CFG_INT, "256", 1, 1 << 20, ANY, "batch the base lr is given for (scaled linearly)"},
    {"train.momentum", CFG_FLOAT, "0.9", 0, 0.9999, ANY, "SGD momentum"},
    {"train.weight_decay", CFG_FLOAT, "1e-4", 0, 1, ANY, "SGD weight decay (L2, PyTorch rule)"},
    {"train.nesterov", CFG_BOOL, "false", 0, 0, ANY, "Nesterov momentum (torch.optim.SGD nesterov=True)"},
    {"train.wd_norm_bias", CFG_BOOL, "true", 0, 0, ANY, "weight decay also on norm weights/biases and conv/linear biases; false = mmcv's norm_decay_mult = bias_decay_mult = 0"},
    {"train.schedule", CFG_STRING, "\"cosine\"", 0, 0, "cosine|step|constant", "learning-rate schedule"},
    {"train.steps", CFG_FLOATS, "[]", 0, 1, ANY, "step schedule: fractions of training where lr x= train.gamma"},
    {"train.gamma", CFG_FLOAT, "0.1", 0, 1, ANY, "step schedule factor"},
    {"train.warmup_iters", CFG_INT, "0", 0, BIG, ANY, "linear warm-up iterations"},
    {"train.warmup_factor", CFG_FLOAT, "0.3333333", 0, 1, ANY, "warm-up starts at lr x this"},
    {"train.clip_grad", CFG_FLOAT, "0", 0, 1e9, ANY, "clip gradients to this global L2 norm; 0 = off"},
    {"train.label_smoothing", CFG_FLOAT, "0.1", 0, 1, ANY, "label smoothing of the cross-entropy"},
    {"train.crop", CFG_INT, "224", 8, 4096, ANY, "training crop size (random resized crop)"},
    {"train.min_scale", CFG_FLOAT, "0.08", 0.01, 1, ANY, "random resized crop: smallest area fraction"},
    {"train.crop_mode", CFG_STRING, "\"rrc\"", 0, 0, "rrc|random|center", "classify training crop: random resized crop (train.min_scale..1, aspect 3/4..4/3) resized to train.crop; random = torchvision RandomCrop(train.crop), no resizing; center = as validation"},
    {"train.flip", CFG_BOOL, "true", 0, 0, ANY, "classify: random horizontal flip"},
    {"train.slice_shuffle", CFG_BOOL, "true", 0, 0, ANY, "random order of the three VDT slices"},
    {"train.mean", CFG_FLOAT, "114.495", -1e6, 1e6, ANY, "input normalisation mean"},
    {"train.std", CFG_FLOAT, "57.63", 1e-6, 1e6, ANY, "input normalisation std"},
    {"train.sync_bn", CFG_BOOL, "false", 0, 0, ANY, "synchronise BatchNorm statistics over ranks"},
    {"train.bucket_mb", CFG_FLOAT, "25", 0.01, 4096, ANY, "gradient all-reduce bucket size (MB)"},
    {"train.check_every", CFG_INT, "0", 0, BIG, ANY, "check every N steps that all ranks hold identical parameters; 0 = off"},
    {"train.val_every", CFG_FLOAT, "1", 0, 1e6, ANY, "validate every N epochs (fractions: every round(N x steps per epoch) steps) and after the last step; 0 = never"},
    {"train.log_every", CFG_INT, "10", 1, BIG, ANY, "log and write train metrics (mean loss of the steps since the last line) every N steps"},
    {"train.ckpt_every", CFG_INT, "500", 1, BIG, ANY, "write a checkpoint every N steps"},
    {"train.ckpt_keep", CFG_INT, "3", 1, 1000, ANY, "checkpoints kept"},
    {"train.threads", CFG_INT, "0", 0, 1024, ANY, "BLAS threads per rank; 0 = OPENBLAS_NUM_THREADS or 1"},

    // --- nn: compute engines ------------------------------------------------------------
    {"nn.conv_engine", CFG_STRING, "\"dnnl\"", 0, 0, "auto|gemm|dnnl", "convolutions: gemm = vol2col + OpenBLAS sgemm (the reference); dnnl = oneDNN's direct kernels where the build has them; auto = per layer shape, the faster of the two measured at first use (not bit-reproducible across runs)"},

    // --- detector ----------------------------------------------------------------------
    {"det.anchors_from", CFG_STRING, "\"\"", 0, 0, ANY, "anchors.cfg written by mp3d anchors: its det.anchor_scale / det.anchor_ratios replace these (\"\" = use them)"},
    {"det.anchor_scale", CFG_FLOAT, "4", 0.5, 64, ANY, "anchor side = anchor_scale x stride"},
    {"det.anchor_ratios", CFG_FLOATS, "[0.5, 1.0, 2.0]", 0.05, 20, ANY, "anchor aspect ratios h/w"},
    {"det.train_sizes", CFG_INTS, "[448, 512, 576]", 32, 4096, ANY, "training image sizes (one drawn per batch)"},
    {"det.test_size", CFG_INT, "512", 32, 4096, ANY, "inference image size"},
    {"det.window", CFG_FLOATS, "[-1024.0, 1050.0]", -32768, 32767, ANY, "HU window mapped to [0, 255]"},
    {"det.fpn_channels", CFG_INT, "256", 8, 4096, ANY, "FPN width"},
    {"det.max_dets", CFG_INT, "100", 1, 100000, ANY, "detections kept per image"},
    {"det.fc_dim", CFG_INT, "1024", 8, 16384, ANY, "width of the box head's two shared FC layers"},
    {"det.rpn_samples", CFG_INT, "256", 2, 65536, ANY, "anchors sampled per image for the RPN loss (half positive at most)"},
    {"det.rpn_pre_nms", CFG_INT, "2000", 1, 1000000, ANY, "RPN candidates per FPN level before NMS"},
    {"det.rpn_post_nms", CFG_INT, "1000", 1, 100000, ANY, "proposals kept per image after the RPN NMS"},
    {"det.rpn_nms_iou", CFG_FLOAT, "0.7", 0.01, 1, ANY, "IoU of the RPN proposal NMS"},
    {"det.roi_samples", CFG_INT, "512", 2, 65536, ANY, "RoIs sampled per image for the box head loss"},
    {"det.roi_pos_fraction", CFG_FLOAT, "0.25", 0.01, 1, ANY, "largest positive share of the sampled RoIs"},
    {"det.nms_iou", CFG_FLOAT, "0.5", 0.01, 1, ANY, "IoU of the per-class NMS of the final detections"},
    {"det.score_thr", CFG_FLOAT, "0", 0, 1, ANY, "detections need a score above this"},
    {"det.flip", CFG_BOOL, "true", 0, 0, ANY, "training: random horizontal flip"},
    {"det.zflip", CFG_BOOL, "true", 0, 0, ANY, "training: random reversal of the slice order (z flip)"},
    {"det.slice_shuffle", CFG_BOOL, "true", 0, 0, ANY, "detect_coco training: random order of the 3 VDT slices (R, G, B)"},
    {"det.ignore_iof", CFG_FLOAT, "0.5", -1, 1, ANY, "anchors/RoIs covered more than this (IoF) by a crowd region are ignored; <= 0: crowd regions unused"},
    {"det.kmeans_k", CFG_INT, "0", 0, 16, ANY, "mp3d anchors: clusters of the k-means on box shapes; 0 = as many as det.anchor_ratios"},

    // --- evaluation / FROC -------------------------------------------------------------
    {"eval.split", CFG_STRING, "\"test\"", 0, 0, "train|val|test|all", "split scored"},
    {"eval.iou", CFG_FLOAT, "0.5", 0.01, 1, ANY, "IoU for a hit"},
    {"eval.iou_plus1", CFG_BOOL, "true", 0, 0, ANY, "IoU with +1 on widths (3DCE/MULAN) instead of continuous (MP3D)"},
    {"eval.noisy", CFG_STRING, "\"exclude\"", 0, 0, "exclude|keep", "lesions flagged Possibly_noisy"},
    {"eval.fp_rule", CFG_STRING, "\"before_next\"", 0, 0, "before_next|first_at", "sensitivity at an exact integer FP count"},
    {"eval.bootstrap", CFG_INT, "1000", 0, 1000000, ANY, "bootstrap repetitions over patients for CIs; 0 = off"},
    {"eval.overlays", CFG_INT, "8", 0, 10000, ANY, "overlay PNGs of missed lesions and top false positives"},
    {"eval.checkpoint", CFG_STRING, "\"\"", 0, 0, ANY, "checkpoint evaluated (or a folder: its newest valid one)"},
    {"eval.truth", CFG_STRING, "\"\"", 0, 0, ANY, "DL_info.csv scored against"},
    {"eval.detections", CFG_STRING, "\"\"", 0, 0, ANY, "detections CSV scored (mp3d froc)"},
    {"eval.json", CFG_BOOL, "false", 0, 0, ANY, "print the figures as one JSON object on stdout"},
    {"eval.train_metrics", CFG_STRING, "\"\"", 0, 0, ANY, "metrics.jsonl of the training run: its loss, lr and validation curves go into the report (\"\" = none)"},
    {"eval.quarantine", CFG_STRING, "\"\"", 0, 0, ANY, "preprocessing quarantine.csv summarised in the report (\"\" = look beside output.dir and in input.root)"},

    // --- plain-tensor entry points -----------------------------------------------------
    {"infer.checkpoint", CFG_STRING, "\"\"", 0, 0, ANY, "checkpoint for mp3d infer"},
    {"infer.input", CFG_STRING, "\"\"", 0, 0, ANY, "HDF5 with /input (N, 1, D, H, W) float32"},
    {"infer.output", CFG_STRING, "\"\"", 0, 0, ANY, "HDF5 written with /output"},
    {"inspect.file", CFG_STRING, "\"\"", 0, 0, ANY, "file summarised by mp3d inspect"},

    // --- import / export: PyTorch .pth <-> mp3d checkpoints -------------------------------
    {"import.from", CFG_STRING, "\"\"", 0, 0, ANY, "PyTorch checkpoint (.pth, zip or legacy format) mp3d import reads"},
    {"import.out", CFG_STRING, "\"\"", 0, 0, ANY, "mp3d checkpoint (.h5) mp3d import writes"},
    {"import.map", CFG_STRING, "\"auto\"", 0, 0, "auto|plain|mmdet|mmcls", "state-dict names of the .pth (also for model.init_from = \"x.pth\"); auto: mmcls if backbone.* and head.fc.*, mmdet if backbone.*, else plain"},
    {"import.depth", CFG_INT, "9", 1, 63, ANY, "input slices of the detector mp3d import builds for a detection task (the GTM depth)"},
    {"export.checkpoint", CFG_STRING, "\"\"", 0, 0, ANY, "mp3d checkpoint mp3d export reads"},
    {"export.out", CFG_STRING, "\"\"", 0, 0, ANY, "PyTorch state dict (.pth, zip format) mp3d export writes"},
    {"export.map", CFG_STRING, "\"plain\"", 0, 0, "plain|mmdet|mmcls", "names written: mp3d's (plain) or mmdet/mmcls-style (backbone.*, head.fc.*)"},

    // --- pipeline ----------------------------------------------------------------------
    {"pipeline.dir", CFG_STRING, "\"\"", 0, 0, ANY, "run folder of mp3d run (\"@dir\" in stage settings)"},
    {"pipeline.only", CFG_STRING, "\"\"", 0, 0, ANY, "run only these stages (comma-separated names); empty = all"},
    {"pipeline.dry_run", CFG_BOOL, "false", 0, 0, ANY, "print the plan only"},
    {"pipeline.groups", CFG_BOOL, "true", 0, 0, ANY, "run stages with rank counts side by side in rank groups; false = every stage on all ranks in turn"},
    {"pipeline.poll_s", CFG_FLOAT, "1", 0.01, 60, ANY, "seconds between looks at completion markers and a followed stage's checkpoints"},
};
const int cfg_schema_len = (int)(sizeof cfg_schema / sizeof cfg_schema[0]);
