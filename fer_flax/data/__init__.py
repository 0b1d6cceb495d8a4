"""FER2013 in: reading it, photos as model input, the TFDS builder, the tf.data and on-device
feeds, augmentation and progressive resizing. Imports only `fer_flax.core`."""
