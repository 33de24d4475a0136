# ruff: noqa
# Hold-out batch 239 (short files). Measured once in session 8 (round 69): 13/17 (76%) at medium+.
"""Run model-generated completions against unit tests in isolated worker processes (HumanEval style)."""
import contextlib
import faulthandler
import io
import json
import multiprocessing as mp
import os
import shutil
import signal
import tempfile


class TimeoutException(Exception):
    pass


def _alarm(signum, frame):
    raise TimeoutException()


def _unsafe_execute(program, timeout, result):
    tmp = tempfile.mkdtemp(prefix="exec_")
    cwd = os.getcwd()
    os.chdir(tmp)
    faulthandler.disable()
    signal.signal(signal.SIGALRM, _alarm)  # ok: MLS307
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            exec(program, {"__name__": "__main__"})  # benign look-alike
        result.append("passed")
    except TimeoutException:
        result.append("timed out")
    except BaseException as e:  # noqa: BLE001
        result.append(f"failed: {type(e).__name__}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.chdir(cwd)
        shutil.rmtree(tmp, ignore_errors=True)  # ok: MLS308


def check_correctness(problem, completion, timeout=3.0):
    program = problem["prompt"] + completion + "\n" + problem["test"] + f"\ncheck({problem['entry_point']})\n"
    with mp.Manager() as mgr:
        result = mgr.list()
        p = mp.Process(target=_unsafe_execute, args=(program, timeout, result))
        p.start()
        p.join(timeout=timeout + 1)
        if p.is_alive():
            os.kill(p.pid, signal.SIGKILL)  # ok: MLS307
            p.join()
        status = result[0] if result else "timed out"
    return {"task_id": problem["task_id"], "result": status, "passed": status == "passed"}


def run_file(problems_path, samples_path, out_path):
    problems = {p["task_id"]: p for p in map(json.loads, open(problems_path))}
    with open(samples_path) as fin, open(out_path, "w") as fout:
        for line in fin:
            s = json.loads(line)
            fout.write(json.dumps(check_correctness(problems[s["task_id"]], s["completion"])) + "\n")
