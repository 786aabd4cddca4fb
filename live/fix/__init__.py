"""FIX 4.4 session layer: codec, data dictionary, message store, sessions (acceptor and
initiator). Standard library, simplefix-free hot path, pydantic for settings only."""
