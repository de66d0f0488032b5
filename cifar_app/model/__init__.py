"""The model room: the dynamic-convolution network and the step that trains it.

    network   the coursework's network, readable top to bottom, and its three exact dynamic convolutions
    step      one training step (optimizer, bf16 autocast, channels_last, CUDA graph, torch.compile, eager)
The shape arithmetic the config validates with is torch-free and lives in the ground (cifar_app.shape).
May import the ground and data.
"""
