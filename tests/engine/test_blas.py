from threadpoolctl import threadpool_info

from engine.blas import blas_info, cpu_count, set_blas_threads


def blas_threads_seen_by_threadpoolctl() -> set[int]:
    return {lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"}


def test_setting_blas_threads_is_visible_through_threadpoolctl():
    try:
        assert set_blas_threads(1) == 1
        assert blas_threads_seen_by_threadpoolctl() == {1}
        n = min(2, cpu_count())
        assert set_blas_threads(n) == n
        assert blas_threads_seen_by_threadpoolctl() == {n}
    finally:
        set_blas_threads(1)


def test_blas_info_names_the_library():
    info = blas_info()
    assert info.library != "unknown" and info.num_threads >= 1
    assert info.library in info.describe()
