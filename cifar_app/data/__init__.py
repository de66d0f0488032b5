"""The data room: CIFAR-10 on disk and on the training device.

    formats   the on-disk formats (python batches, the binary release with its md5s, image folders), read into
              numpy arrays; torch-free
    dataset   `Cifar10` (uint8 tensors), the decoded-copy cache, the download, `python -m cifar_app.data`
    loader    splits, normalisation, batched augmentation and `TensorLoader` (the airbench way), and the
              coursework's PIL DataLoader kept as the benchmark's baseline
May import the ground (config, events, device, atomic) only.
"""
