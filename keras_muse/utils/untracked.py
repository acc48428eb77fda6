class Untracked:
    """Holds an object out of Keras' tracking: its weights do not join the
    holder's variables or weight file (a preprocessor, or a second-stage
    model sampled with its own compiled program)."""

    def __init__(self, value):
        self.value = value
