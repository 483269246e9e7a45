"""flmr's CPU thread policy: explicit settings win, counts follow the work, the usable cores and the load."""

import threading
from pathlib import Path

import pytest
import torch

from flmr import runtime


@pytest.fixture(autouse=True)
def no_user_settings(monkeypatch):
    """No thread variables, torch at its default count, no reservation, 4 usable idle cores."""
    for name in ("FLMR_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    before = torch.get_num_threads()
    monkeypatch.setattr(runtime, "_torch_defaults", lambda: frozenset({before}))
    monkeypatch.setattr(runtime, "usable_cpus", lambda: 4)
    monkeypatch.setattr(runtime._load, "busy_cores", lambda: 0.0)
    previous = runtime.reserve_cpus(0)
    yield
    runtime.reserve_cpus(previous)
    torch.set_num_threads(before)


def test_threads_follow_the_work_up_to_the_free_cores():
    assert runtime.threads_for(0.5 * runtime.MIN_WORK_PER_THREAD) == 1
    assert runtime.threads_for(3 * runtime.MIN_WORK_PER_THREAD) == 3
    assert runtime.threads_for(100 * runtime.MIN_WORK_PER_THREAD) == 4


def test_cores_busy_with_other_processes_are_left_alone(monkeypatch):
    monkeypatch.setattr(runtime._load, "busy_cores", lambda: 2.8)
    assert runtime.free_cpus() == 1
    assert runtime.threads_for(100 * runtime.MIN_WORK_PER_THREAD) == 1
    monkeypatch.setattr(runtime._load, "busy_cores", lambda: 1.1)
    assert runtime.threads_for(100 * runtime.MIN_WORK_PER_THREAD) == 3


def test_reserved_cores_are_left_to_request_handling():
    runtime.reserve_cpus(1)
    assert runtime.threads_for(100 * runtime.MIN_WORK_PER_THREAD) == 3
    runtime.reserve_cpus(4)
    assert runtime.threads_for(100 * runtime.MIN_WORK_PER_THREAD) == 1  # never fewer than one
    with pytest.raises(ValueError, match="cannot reserve -1"):
        runtime.reserve_cpus(-1)


def test_scope_sets_and_restores_torch_threads():
    outside = torch.get_num_threads()
    with runtime.cpu_threads(0.0) as count:
        assert count == 1
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == outside


def test_nested_scopes_size_against_the_count_outside():
    outside = torch.get_num_threads()
    with runtime.cpu_threads(0.0), runtime.cpu_threads(2.5 * runtime.MIN_WORK_PER_THREAD) as inner:
        # the outer scope's 1 thread is not mistaken for a user's choice
        assert inner == 2
    assert torch.get_num_threads() == outside


def test_environment_variable_wins(monkeypatch):
    monkeypatch.setenv("FLMR_NUM_THREADS", "3")
    assert runtime.threads_for(0.0) == 3
    with runtime.cpu_threads(1e15):
        assert torch.get_num_threads() == 3


@pytest.mark.parametrize("value", ["0", "two", "-1"])
def test_bad_environment_variable_is_named(monkeypatch, value):
    monkeypatch.setenv("FLMR_NUM_THREADS", value)
    with pytest.raises(ValueError, match="FLMR_NUM_THREADS"):
        runtime.threads_for(1.0)


def test_omp_num_threads_keeps_torch_count(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    torch.set_num_threads(2)
    with runtime.cpu_threads(0.0) as count:
        assert count == torch.get_num_threads() == 2
    with runtime.cpu_threads(1e15) as count:
        assert count == 2


def test_explicit_torch_set_num_threads_is_kept():
    explicit = max(runtime._torch_defaults()) + 1
    torch.set_num_threads(explicit)
    assert runtime.user_threads() == explicit
    with runtime.cpu_threads(0.0) as count:
        assert count == torch.get_num_threads() == explicit


def test_scopes_in_other_threads_are_their_own():
    seen = []

    def work():
        with runtime.cpu_threads(0.0):
            seen.append(torch.get_num_threads())

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    assert seen == [1]


def test_usable_cpus_is_affinity_capped_by_the_cgroup_quota(monkeypatch):
    monkeypatch.undo()  # the real usable_cpus
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(runtime, "cgroup_cpu_quota", lambda: 3)
    assert runtime.usable_cpus() == 3
    monkeypatch.setattr(runtime, "cgroup_cpu_quota", lambda: None)
    assert runtime.usable_cpus() == 6


def _proc(tmp_path: Path, cgroup_lines: str) -> Path:
    (tmp_path / "proc" / "self").mkdir(parents=True)
    (tmp_path / "proc" / "self" / "cgroup").write_text(cgroup_lines)
    return tmp_path / "proc"


def test_cgroup_v2_quota_rounds_up_and_parents_count(tmp_path):
    root = tmp_path / "cgroup"
    (root / "job" / "task").mkdir(parents=True)
    (root / "job" / "task" / "cpu.max").write_text("max 100000\n")
    (root / "job" / "cpu.max").write_text("150000 100000\n")  # 1.5 cores -> 2
    assert runtime.cgroup_cpu_quota.__wrapped__(root, _proc(tmp_path, "0::/job/task\n")) == 2


def test_cgroup_v1_quota_and_no_limit(tmp_path):
    root = tmp_path / "cgroup"
    (root / "cpu" / "docker").mkdir(parents=True)
    (root / "cpu" / "docker" / "cpu.cfs_quota_us").write_text("300000\n")
    (root / "cpu" / "docker" / "cpu.cfs_period_us").write_text("100000\n")
    proc = _proc(tmp_path, "4:memory:/docker\n3:cpu,cpuacct:/docker\n")
    assert runtime.cgroup_cpu_quota.__wrapped__(root, proc) == 3
    (root / "cpu" / "docker" / "cpu.cfs_quota_us").write_text("-1\n")
    assert runtime.cgroup_cpu_quota.__wrapped__(root, proc) is None


def test_busy_seconds_count_only_this_process_cpus(tmp_path, monkeypatch):
    stat = tmp_path / "stat"
    #              user nice system idle iowait irq softirq steal guest guest_nice
    stat.write_text(
        "cpu  600 0 300 900 100 0 0 0 0 0\n"
        "cpu0 100 0 100 700 100 0 0 0 0 0\n"
        "cpu1 500 0 200 200 0 0 0 50 40 0\n"
        "intr 1 2 3\n"
    )
    monkeypatch.setattr(runtime.os, "sched_getaffinity", lambda pid: {1}, raising=False)
    ticks = runtime.os.sysconf("SC_CLK_TCK")
    # cpu1: everything but idle and iowait, guest time already inside user time
    assert runtime._busy_cpu_seconds(stat) == pytest.approx((500 + 200 + 50) / ticks)


def test_other_processes_load_is_busy_time_minus_own_time(monkeypatch):
    # (wall seconds, busy CPU-seconds of our CPUs, this process's CPU-seconds)
    samples = iter([(0.0, 0.0, 0.0), (0.5, 1.5, 0.5), (0.6, 1.6, 0.6), (1.0, 2.0, 1.0)])
    monkeypatch.setattr(runtime, "_cpu_sample", lambda: next(samples))
    monkeypatch.setattr(runtime.time, "sleep", lambda seconds: None)
    load = runtime._OtherProcessesLoad()
    # first use: measured over a short window; the sample 0.1 s later is too recent to count
    assert load.busy_cores() == pytest.approx(2.0)
    assert load.busy_cores() == pytest.approx(0.0)  # all the busy time since was our own
