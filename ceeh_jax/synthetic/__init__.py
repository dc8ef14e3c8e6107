"""CPU-scale reproduction kit: a verifiable chain-arithmetic task in the R1 format (`task`)
and its tiny R1-compatible HF tokenizer (`tokenizer`)."""
