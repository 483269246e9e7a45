import threading

import torch

from flmr.runtime import SCRATCH_LIMIT_BYTES, scratch


def test_scratch_buffers_are_reused_per_name_and_thread() -> None:
    first = scratch("test", (4, 8), torch.device("cpu"))
    assert scratch("test", (2, 3), torch.device("cpu")).data_ptr() == first.data_ptr()  # smaller: reused
    grown = scratch("test", (16, 8), torch.device("cpu"))
    assert (
        grown.shape == (16, 8) and scratch("test", (4, 8), torch.device("cpu")).data_ptr() == grown.data_ptr()
    )
    assert scratch("other", (4, 8), torch.device("cpu")).data_ptr() != grown.data_ptr()
    in_thread = []
    worker = threading.Thread(target=lambda: in_thread.append(scratch("test", (4, 8), torch.device("cpu"))))
    worker.start()
    worker.join()
    assert in_thread[0].data_ptr() != grown.data_ptr()
    huge = (SCRATCH_LIMIT_BYTES // 4 + 1,)  # past the limit: never kept
    first_huge, second_huge = (scratch("test", huge, torch.device("cpu")) for _ in range(2))
    assert first_huge.data_ptr() != second_huge.data_ptr()


def test_scratch_buffers_are_kept_per_dtype() -> None:
    floats = scratch("typed", (4,), torch.device("cpu"))
    longs = scratch("typed", (4,), torch.device("cpu"), torch.long)
    assert longs.dtype == torch.long and floats.dtype == torch.float32
    assert scratch("typed", (4,), torch.device("cpu")).data_ptr() == floats.data_ptr()
