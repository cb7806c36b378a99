"""ALIGN-FL on Flower: byte-moving shims around the align-fl binary."""
