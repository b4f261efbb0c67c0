"""Test stand-in for comfy.model_management: CPU device, recorded loads, settable interrupt."""

import torch


class InterruptProcessingException(BaseException):
    pass


interrupt_processing = False
load_calls: list = []
unload_calls: list = []
current_loaded_models: list = []


def get_torch_device():
    return torch.device("cpu")


def intermediate_device():
    return torch.device("cpu")


def unet_offload_device():
    return torch.device("cpu")


def get_total_memory(dev=None, torch_total_too=False):
    return 24 * 1024**3


def get_free_memory(dev=None, torch_free_too=False):
    return 16 * 1024**3


def load_models_gpu(models, memory_required=0, force_patch_weights=False, minimum_memory_required=None,
                    force_full_load=False):
    load_calls.append({"models": list(models), "memory_required": memory_required,
                       "force_full_load": force_full_load})


def unload_model_and_clones(model, unload_additional_models=True, all_devices=False):
    unload_calls.append(model)


def soft_empty_cache(force=False):
    pass


def interrupt_current_processing(value=True):
    global interrupt_processing
    interrupt_processing = value


def processing_interrupted():
    return interrupt_processing


def throw_exception_if_processing_interrupted():
    global interrupt_processing
    if interrupt_processing:
        interrupt_processing = False
        raise InterruptProcessingException()
