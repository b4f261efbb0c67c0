"""Graph runs and /acestep REST jobs take turns on the models: one ACE-Step stage at a time."""

from __future__ import annotations

import importlib
import threading
import time
from types import SimpleNamespace

import pytest

import nodes_harness as h


@pytest.fixture()
def model_module():
    h.install_fake_host()
    h.load_pack()
    return importlib.import_module(f"{h.PACK_MODULE_NAME}.nodes.model")


def _model(module):
    decision = module.LoadDecision(dit="d", vae="v", text_encoder="t", lm="none", offload=False, dtype="float32",
                                   device="cpu")
    return module.ACEStepModel(SimpleNamespace(components={}), None, decision, "cpu", "cpu")


def _hold(model, release: threading.Event, started: threading.Event):
    """A REST job's stage (not interruptible) that runs until `release` is set."""
    def stage():
        started.set()
        release.wait(10)
        return "job"

    out = {}
    thread = threading.Thread(target=lambda: out.setdefault("job", model.run_pipeline(stage, interruptible=False)))
    thread.start()
    assert started.wait(5)
    return thread, out


def test_a_graph_stage_waits_for_the_running_job_stage(model_module):
    model = _model(model_module)
    release, started, order = threading.Event(), threading.Event(), []
    job, job_out = _hold(model, release, started)
    graph = threading.Thread(target=lambda: order.append(model.run_pipeline(lambda: "graph")))
    graph.start()
    time.sleep(3 * model_module.STAGE_WAIT_POLL_S)
    assert order == [] and graph.is_alive()  # still waiting: the job's stage holds the models
    release.set()
    job.join(5)
    graph.join(5)
    assert job_out == {"job": "job"} and order == ["graph"]


def test_cancel_ends_a_graph_wait_but_not_a_job(model_module):
    """Cancel while a graph stage waits: the node is interrupted without running; a waiting REST job
    stage ignores ComfyUI's Cancel (it has its own) and runs when the models are free."""
    import comfy.model_management as mm

    model = _model(model_module)
    release, started = threading.Event(), threading.Event()
    job, _ = _hold(model, release, started)
    ran, raised = [], []

    def graph():
        try:
            model.run_pipeline(lambda: ran.append("graph"))
        except mm.InterruptProcessingException:
            raised.append("interrupted")

    waiting_job = threading.Thread(target=lambda: ran.append(model.run_pipeline(lambda: "job 2", interruptible=False)))
    waiting_job.start()
    graph_thread = threading.Thread(target=graph)
    graph_thread.start()
    time.sleep(2 * model_module.STAGE_WAIT_POLL_S)
    mm.interrupt_current_processing(True)
    graph_thread.join(5)
    assert raised == ["interrupted"] and "graph" not in ran
    release.set()
    job.join(5)
    waiting_job.join(5)
    assert ran == ["job 2"]
    mm.interrupt_current_processing(False)
