"""Trains `seed_cnn` as the original project did.

Adam 1e-3 with Keras' defaults, batch 64, no augmentation.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Every knob of a run; override any of them with --config.FIELD=VALUE."""
  config = ml_collections.ConfigDict()
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  config.data.path = ''            # fer2013.zip, its unzipped folder, or fer2013.csv
  config.data.tfds_data_dir = ''   # where the prepared TFDS dataset lives; '' = TFDS default
  config.data.train_split = 'train'
  config.data.eval_split = 'public_test'
  config.data.pipeline = 'tfds'    # tfds (tf.data) | memory (the splits on the devices; no TF)
  config.data.prefetch = 2         # tfds: batches kept in flight on the devices

  config.model = ml_collections.ConfigDict()
  config.model.name = 'seed_cnn'  # seed_cnn | vgg | resnet18 | resnet34 | compact
  config.model.dropout_rate = 0.5
  config.model.dtype = 'float32'  # compute dtype: bfloat16 on accelerators; parameters stay float32

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = 'adam'   # adam | adamw | sgd
  config.optimizer.learning_rate = 1e-3
  config.optimizer.reference_batch_size = 0  # >0: learning_rate is for this batch size, and
                                             # scales linearly with config.batch_size
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-7      # Keras' default, which the original used
  config.optimizer.momentum = 0.9  # sgd only
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 0.0  # kernels only, never biases or norms
  config.optimizer.schedule = 'constant'  # constant | cosine | onecycle
  config.optimizer.warmup_epochs = 0.0    # linear warm-up; one-cycle's rising phase
  config.optimizer.warmup_share = 0.0     # >0: the warm-up as this share of the run's epochs
  config.optimizer.onecycle_div_factor = 25.0         # one-cycle starts at peak / this
  config.optimizer.onecycle_final_div_factor = 1e4    # and ends at its start / this
  config.optimizer.grad_clip_norm = 0.0   # 0 disables clipping
  config.optimizer.lookahead_steps = 0    # >0: Lookahead, syncing the slow weights this often
  config.optimizer.lookahead_step_size = 0.5  # how far the slow weights move at each sync
  config.optimizer.muon_learning_rate = 0.0  # >0: Muon's peak rate for the convolution kernels
  config.optimizer.muon_momentum = 0.95      # Muon's Nesterov momentum
  config.optimizer.muon_ns_steps = 5         # Newton-Schulz iterations a step (3: cheaper)

  # Training augmentation, inside the compiled step; all off reproduces the original.
  config.augment = ml_collections.ConfigDict()
  config.augment.flip = False          # horizontal, with probability 1/2
  config.augment.alternate_flips = False  # memory input: each face mirrored every other epoch
  config.augment.crop_padding = 0      # random crop of the image edge-padded by this many pixels
  config.augment.rotation = 0.0        # degrees, uniform in +-rotation
  config.augment.scale = 0.0           # zoom in [1/(1+scale), 1+scale], log-uniform
  config.augment.shift = 0.0           # fraction of the image size, uniform in +-shift
  config.augment.blur_probability = 0.0   # Gaussian blur, as of a face resampled from a photo
  config.augment.blur_sigma = 1.0         # its width in pixels, uniform in [0, blur_sigma]
  config.augment.erase_probability = 0.0  # random erasing of a noise rectangle
  config.augment.erase_min_area = 0.02    # of the image
  config.augment.erase_max_area = 0.25
  config.augment.mixup_alpha = 0.0     # Beta(alpha, alpha) mixing weight; 0 disables mixup
  config.augment.cutmix_alpha = 0.0    # 0 disables CutMix; with both on, each batch picks one
  config.augment.clean_last_epochs = 0  # the run's last epochs with flips only, nothing else

  # Progressive resizing (fer_flax/data/progressive.py): the first epochs on smaller faces, whose
  # steps cost less; each size trains for its share of the epochs, the rest of the run is at 48x48.
  config.progressive = ml_collections.ConfigDict()
  config.progressive.sizes = ()      # e.g. (32, 40), smallest first
  config.progressive.fractions = ()  # e.g. (0.25, 0.25)

  config.label_smoothing = 0.0
  config.ema_decay = 0.0           # moving average of the weights, used for evaluation; 0 = off
  config.batch_size = 64           # global, across all devices and processes
  config.eval_batch_size = 256
  config.num_epochs = 20
  # Minutes from the command's start; >0 sizes num_epochs (and the warm-up) to fit them, from the
  # measured speed of the first steps (fer_flax/train/budget.py). 0: train num_epochs.
  config.time_budget_minutes = 0.0
  config.steps_per_call = 1        # memory input: train steps per compiled call (one host trip)

  # XLA options for compiling the steps on CPUs (ignored elsewhere): YNNPACK's kernels off, which
  # made XLA:CPU's convolutions faster (docs/speed.md).
  config.cpu_compiler_options = ml_collections.ConfigDict(
      {'xla_cpu_experimental_ynn_fusion_type': ''})

  # Several processes (Cloud TPU pods, multi-host GPUs): fields left unset come from the
  # environment (JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID) or JAX's detection of
  # Cloud TPU, SLURM, Open MPI and Kubernetes.
  config.distributed = ml_collections.ConfigDict()
  config.distributed.initialize = False      # call jax.distributed.initialize()
  config.distributed.coordinator_address = ''  # HOST:PORT of process 0
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  config.distributed.timeout_seconds = 300   # how long to wait for every process to join

  config.log_every_steps = 100
  config.checkpoint_every_steps = 0  # 0: save at the end of each epoch only
  config.keep_checkpoints = 3        # the latest few; the best by eval accuracy is kept too
  return config
