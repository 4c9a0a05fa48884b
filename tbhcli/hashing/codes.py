"""Binary codes: {0,1} bits <-> packed uint8 bytes, in NumPy and in (ONNX-exportable) torch.

Bit order is big-endian within each byte, as `np.packbits`: bit j of a code lives in byte j // 8 at
mask 128 >> (j % 8). The store, the ONNX models and the search kernels all use this layout.
"""

import numpy as np
import torch

from tbhcli.errors import TbhError

MAX_BITS = 4096  # far past any useful code length; a larger value is a typo, not a request


def check_bits(bits: int) -> int:
    """Return `bits` if it is a positive multiple of 8 up to MAX_BITS, else raise a user error."""
    if bits <= 0 or bits % 8 or bits > MAX_BITS:
        raise TbhError(
            f"--bits must be a multiple of 8 from 8 to {MAX_BITS} (got {bits}); try 16, 32 or 64."
        )
    return bits


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a bool/0-1 array [N, M] (M a multiple of 8) into uint8 [N, M / 8]."""
    return np.packbits(np.asarray(bits, dtype=bool), axis=1)


def unpack_bits(codes: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Unpack uint8 [N, M / 8] into a uint8 0/1 array [N, M]."""
    return np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1, count=bits)


_BYTE_WEIGHTS = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.float32)


def pack_bits_torch(bits: torch.Tensor) -> torch.Tensor:
    """Pack a bool/0-1 tensor [N, M] into uint8 [N, M / 8] with ops that export to ONNX."""
    n, m = bits.shape
    grouped = bits.to(torch.float32).reshape(n, m // 8, 8)  # (N, M/8, 8)
    return (grouped * _BYTE_WEIGHTS.to(bits.device)).sum(dim=2).to(torch.uint8)
