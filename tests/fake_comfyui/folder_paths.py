"""Test stand-in for ComfyUI's folder_paths (same counter and containment rules)."""

import os

supported_pt_extensions = {".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"}
models_dir = os.environ.get("FAKE_COMFY_MODELS", "/nonexistent-models")
folder_names_and_paths: dict = {}
output_directory = "/nonexistent-output"
temp_directory = "/nonexistent-temp"
input_directory = "/nonexistent-input"


def reset(models: str, output: str, temp: str, input_: str) -> None:
    global models_dir, output_directory, temp_directory, input_directory
    models_dir, output_directory, temp_directory, input_directory = models, output, temp, input_
    folder_names_and_paths.clear()
    for key, sub in (("diffusion_models", "diffusion_models"), ("vae", "vae"), ("text_encoders", "text_encoders"),
                     ("loras", "loras"), ("checkpoints", "checkpoints")):
        folder_names_and_paths[key] = ([os.path.join(models, sub)], set(supported_pt_extensions))


def map_legacy(name):
    return {"unet": "diffusion_models", "clip": "text_encoders"}.get(name, name)


def add_model_folder_path(folder_name, full_folder_path, is_default=False):
    folder_name = map_legacy(folder_name)
    if folder_name in folder_names_and_paths:
        paths = folder_names_and_paths[folder_name][0]
        if full_folder_path not in paths:
            paths.insert(0, full_folder_path) if is_default else paths.append(full_folder_path)
    else:
        folder_names_and_paths[folder_name] = ([full_folder_path], set())


def get_folder_paths(folder_name):
    return folder_names_and_paths[map_legacy(folder_name)][0][:]


def get_filename_list(folder_name):
    paths, exts = folder_names_and_paths[map_legacy(folder_name)]
    out = []
    for root in paths:
        if not os.path.isdir(root):
            continue
        for dirpath, _, files in os.walk(root, followlinks=True):
            for f in files:
                if not exts or os.path.splitext(f)[1] in exts:
                    out.append(os.path.relpath(os.path.join(dirpath, f), root).replace(os.sep, "/"))
    return sorted(set(out))


def get_full_path(folder_name, filename):
    for root in folder_names_and_paths.get(map_legacy(folder_name), ([], set()))[0]:
        full = os.path.join(root, filename)
        if os.path.isfile(full):
            return full
    return None


def get_full_path_or_raise(folder_name, filename):
    full = get_full_path(folder_name, filename)
    if full is None:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.")
    return full


def get_output_directory():
    return output_directory


def get_temp_directory():
    return temp_directory


def get_input_directory():
    return input_directory


def get_save_image_path(filename_prefix, output_dir, image_width=0, image_height=0):
    def map_filename(filename):
        prefix_len = len(os.path.basename(filename_prefix))
        prefix = filename[:prefix_len + 1]
        try:
            digits = int(filename[prefix_len + 1:].split(".")[0].split("_")[0])
        except ValueError:
            digits = 0
        return digits, prefix

    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = os.path.join(output_dir, subfolder)
    if os.path.commonpath((output_dir, os.path.abspath(full_output_folder))) != output_dir:
        raise Exception("**** ERROR: Saving image outside the output folder is not allowed.")
    try:
        counter = max(filter(lambda a: os.path.normcase(a[1][:-1]) == os.path.normcase(filename) and a[1][-1] == "_",
                             map(map_filename, os.listdir(full_output_folder))))[0] + 1
    except ValueError:
        counter = 1
    except FileNotFoundError:
        os.makedirs(full_output_folder, exist_ok=True)
        counter = 1
    return full_output_folder, filename, counter, subfolder, filename_prefix
