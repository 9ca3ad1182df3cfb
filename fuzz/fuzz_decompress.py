#!/usr/bin/env python3
"""atheris fuzz target for fastcodec.decompress (container parser, coders, model path).

    python fuzz/fuzz_decompress.py tests/corpus/decompress -max_total_time=60

Contract: any input either decodes or raises a FastcodecError (FormatError, LimitError, ...);
anything else (another exception, a crash, a hang) is a bug. Inputs are mostly mutations of
valid files with their checksums repaired, so the fuzzer reaches the entropy decoders.
"""
import sys

import atheris

with atheris.instrument_imports():
    import fastcodec
    from fastcodec import format as fmt

CODEC = fastcodec.Codec(max_pixels=4_000_000)


def one_input(data: bytes):
    candidates = [data]
    # repair checksums so that mutations get past the CRCs into the decoders
    try:
        fmt.parse(data, verify_crc=False, max_pixels=CODEC.max_pixels)
        candidates.append(fmt.repack(data))
    except fastcodec.FastcodecError:
        pass
    for d in candidates:
        try:
            out = CODEC.decompress(d)
            assert out.shape[:2] == (CODEC.info(d).height, CODEC.info(d).width)
        except fastcodec.FastcodecError:
            pass


def main():
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
