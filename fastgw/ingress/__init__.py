"""Front doors: the APIs a client may speak to the gateway, one module each."""
