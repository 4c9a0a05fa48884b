"""Features in, binary codes out: the TBH model, LSH/PCAH/ITQ, bit packing, saved runs."""
