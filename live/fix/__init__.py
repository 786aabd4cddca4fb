"""FIX 4.4 session layer: codec, data dictionary, message store, sessions (acceptor and
initiator). Standard library and pydantic (settings) only: its own codec, because simplefix
parses at less than the 20,000 messages/s the session needs (it stays the bench's comparator)."""
