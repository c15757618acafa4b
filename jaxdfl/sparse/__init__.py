"""Masks and top-k selection: exact kernels (:mod:`topk`) and LoRA update sparsifiers (:mod:`lora`).

A(n) is equation n of Paper A (sparse-and-orthogonal LoRA for decentralized multi-task fine-tuning), B(n) of
Paper B (SOFT and TSFA for wireless federated LoRA).
"""

from jaxdfl.sparse.lora import SELECTORS, allocate, importance
from jaxdfl.sparse.topk import descending_rank, kth_largest, random_k_mask, top_k_mask, top_k_per_row

__all__ = ["SELECTORS", "allocate", "descending_rank", "importance", "kth_largest", "random_k_mask", "top_k_mask",
           "top_k_per_row"]
