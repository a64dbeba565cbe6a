"""GourmetGram operations: the ``gourmetgram`` command and the libraries behind it."""
