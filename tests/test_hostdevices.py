"""One XLA device per CPU core (`jaxlab.hostdevices`): the flag it sets, when it stays out of the
way, and bad values of JAXLAB_CPU_DEVICES."""

import subprocess
import sys

import jax
import pytest
from _jaxenv import jax_env

from jaxlab import hostdevices
from jaxlab.errors import ConfigError


def env_without_device_flag(**extra):
    env = jax_env()
    env["XLA_FLAGS"] = " ".join(f for f in env["XLA_FLAGS"].split() if not f.startswith(hostdevices.FLAG))
    env.pop(hostdevices.ENV, None)
    return {**env, **extra}


def run(code, env):
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)


def test_sets_the_device_count_before_jax_starts():
    code = (
        "from jaxlab.hostdevices import use_cpu_cores; n = use_cpu_cores(3); import jax; print(n, jax.device_count())"
    )
    proc = run(code, env_without_device_flag())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["3", "3"]
    # the environment variable chooses the count; an explicit XLA flag wins over both
    code = "from jaxlab.hostdevices import use_cpu_cores; n = use_cpu_cores(); import jax; print(n, jax.device_count())"
    proc = run(code, env_without_device_flag(JAXLAB_CPU_DEVICES="2"))
    assert proc.stdout.split() == ["2", "2"], proc.stderr[-2000:]
    proc = run(code, jax_env(n_devices=4) | {"JAXLAB_CPU_DEVICES": "2"})
    assert proc.stdout.split() == ["None", "4"], proc.stderr[-2000:]


def test_backend_start_is_detected_without_starting_it():
    """The public-config probe: False once jax is imported but idle (its setting left as found, the
    flag still applies), True after the first device query."""
    code = (
        "import jax; from jaxlab.hostdevices import _backend_started, use_cpu_cores; "
        "a = _backend_started(); n = use_cpu_cores(3); "
        "print(a, n, jax.config.jax_num_cpu_devices, jax.device_count(), _backend_started())"
    )
    proc = run(code, env_without_device_flag())
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "3", "-1", "3", "True"]


def test_too_late_or_one_device_changes_nothing(monkeypatch):
    jax.devices()  # this process's backend has started
    monkeypatch.setenv("XLA_FLAGS", "")
    assert hostdevices.use_cpu_cores(4) is None
    monkeypatch.setattr(hostdevices, "_backend_started", lambda: False)
    assert hostdevices.use_cpu_cores(1) is None
    assert (
        hostdevices.use_cpu_cores(5) == 5
        and "--xla_force_host_platform_device_count=5" in hostdevices.os.environ["XLA_FLAGS"]
    )


@pytest.mark.parametrize("value", ["0", "two", "-1", "1000"])
def test_bad_environment_value_is_a_config_error(monkeypatch, value):
    monkeypatch.setenv(hostdevices.ENV, value)
    with pytest.raises(ConfigError, match=hostdevices.ENV):
        hostdevices.requested_devices()


def test_more_devices_than_cores_is_refused(monkeypatch):
    cores = hostdevices.cpu_cores()
    monkeypatch.setenv(hostdevices.ENV, str(cores))
    assert hostdevices.requested_devices() == cores
    for value in (cores + 1, 1000):
        monkeypatch.setenv(hostdevices.ENV, str(value))
        with pytest.raises(ConfigError, match=f"more than the {cores} CPU cores") as err:
            hostdevices.requested_devices()
        assert f"1..{cores}" in str(err.value)


def test_cli_reports_a_bad_value_with_exit_status_2(tmp_path):
    env = env_without_device_flag(JAXLAB_CPU_DEVICES="zero")
    proc = subprocess.run(
        [sys.executable, "-m", "jaxlab", "report", str(tmp_path)], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2
    assert "JAXLAB_CPU_DEVICES" in proc.stderr and "Traceback" not in proc.stderr
