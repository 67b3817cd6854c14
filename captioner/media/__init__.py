"""Pure decoding: bytes to RGB uint8 at each model's size, or an error value; the bounded decode child. No Ray."""
