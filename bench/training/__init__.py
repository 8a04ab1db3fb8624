"""Training score networks (``bench train``): the conv UNet, the training loop and the model-folder
format the ``score:DIR`` and digits models read."""
