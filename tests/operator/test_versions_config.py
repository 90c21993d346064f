"""API versions chosen from discovery, and the operator's settings from the environment: bad values
are refused with the variable's name."""

from __future__ import annotations

import pytest
from modeldeploy_operator import cli
from modeldeploy_operator.config import ConfigError, OperatorConfig
from modeldeploy_operator.render import DEFAULT_RUNTIME_IMAGE
from modeldeploy_operator.versions import ApiVersions, UnsupportedCluster, choose_api_versions

# What a 1.30 cluster and the local 1.20 control plane serve (the groups that matter here).
CURRENT = ["v1", "apps/v1", "autoscaling/v1", "autoscaling/v2", "policy/v1", "networking.k8s.io/v1"]
OLD = ["v1", "apps/v1", "autoscaling/v1", "autoscaling/v2beta1", "autoscaling/v2beta2", "policy/v1beta1"]


@pytest.mark.parametrize(
    "served, hpa, pdb",
    [
        (CURRENT, "autoscaling/v2", "policy/v1"),
        (CURRENT + ["autoscaling/v2beta2", "policy/v1beta1"], "autoscaling/v2", "policy/v1"),
        (OLD, "autoscaling/v2beta2", "policy/v1beta1"),
        (OLD + ["policy/v1"], "autoscaling/v2beta2", "policy/v1"),
    ],
    ids=["current", "both-served-ga-wins", "1.20", "mixed"],
)
def test_ga_preferred_beta_as_fallback(served, hpa, pdb):
    assert choose_api_versions(served) == ApiVersions(hpa=hpa, pdb=pdb)


def test_choose_accepts_any_iterable():
    assert choose_api_versions(iter(CURRENT)) == ApiVersions()


@pytest.mark.parametrize(
    "served, kind, versions",
    [
        (["v1", "apps/v1", "policy/v1"], "HorizontalPodAutoscaler", "autoscaling/v2, autoscaling/v2beta2"),
        (["v1", "apps/v1", "autoscaling/v2"], "PodDisruptionBudget", "policy/v1, policy/v1beta1"),
        (["autoscaling/v1", "autoscaling/v2beta1", "policy/v1"], "HorizontalPodAutoscaler", "autoscaling/v2"),
    ],
    ids=["no-hpa", "no-pdb", "only-too-old-hpa"],
)
def test_a_cluster_serving_neither_is_refused_naming_the_kind(served, kind, versions):
    with pytest.raises(UnsupportedCluster) as err:
        choose_api_versions(served)
    assert kind in str(err.value)
    assert versions in str(err.value)


# ---- config -------------------------------------------------------------------------------------

VARIABLES = [
    "MODELDEPLOY_RUNTIME_IMAGE",
    "MODELDEPLOY_RESYNC_SECONDS",
    "MODELDEPLOY_METRICS_PORT",
    "MODELDEPLOY_HEALTH_PORT",
    "MODELDEPLOY_LOG_LEVEL",
]


@pytest.fixture
def environ(monkeypatch):
    for name in VARIABLES:
        monkeypatch.delenv(name, raising=False)

    def set_env(**values: str) -> None:
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_defaults_are_the_documented_ones(environ):
    assert OperatorConfig.from_env() == OperatorConfig(
        runtime_image=DEFAULT_RUNTIME_IMAGE, resync_seconds=30, metrics_port=9090, health_port=8081, log_level="info"
    )


def test_empty_values_mean_the_default(environ):
    environ(**dict.fromkeys(VARIABLES[:-1], ""))
    assert OperatorConfig.from_env() == OperatorConfig(DEFAULT_RUNTIME_IMAGE, 30, 9090, 8081, "info")


def test_values_from_the_environment(environ):
    environ(
        MODELDEPLOY_RUNTIME_IMAGE="registry.local/runtime:2",
        MODELDEPLOY_RESYNC_SECONDS="5",
        MODELDEPLOY_METRICS_PORT="0",
        MODELDEPLOY_HEALTH_PORT="18081",
        MODELDEPLOY_LOG_LEVEL="DEBUG",
    )
    assert OperatorConfig.from_env() == OperatorConfig("registry.local/runtime:2", 5, 0, 18081, "debug")


BAD = {
    "resync-not-a-number": ("MODELDEPLOY_RESYNC_SECONDS", "soon", "is not a whole number"),
    "resync-fraction": ("MODELDEPLOY_RESYNC_SECONDS", "0.5", "is not a whole number"),
    "resync-zero": ("MODELDEPLOY_RESYNC_SECONDS", "0", "must be at least 1"),
    "metrics-port-negative": ("MODELDEPLOY_METRICS_PORT", "-1", "must be at least 0"),
    "metrics-port-name": ("MODELDEPLOY_METRICS_PORT", "http", "is not a whole number"),
    "health-port-negative": ("MODELDEPLOY_HEALTH_PORT", "-8081", "must be at least 0"),
    "log-level": ("MODELDEPLOY_LOG_LEVEL", "verbose", "use debug, info, warning or error"),
}


@pytest.mark.parametrize("name, value, why", BAD.values(), ids=BAD.keys())
def test_a_bad_value_is_refused_naming_the_variable(environ, name, value, why):
    environ(**{name: value})
    with pytest.raises(ConfigError) as err:
        OperatorConfig.from_env()
    assert str(err.value).startswith(f"{name}=")
    assert why in str(err.value)


@pytest.mark.parametrize("name", ["MODELDEPLOY_METRICS_PORT", "MODELDEPLOY_HEALTH_PORT"])
def test_a_port_above_65535_is_refused(environ, name):
    environ(**{name: "70000"})
    with pytest.raises(ConfigError, match=name):
        OperatorConfig.from_env()


def test_the_operator_command_exits_2_naming_the_variable(environ, capsys):
    environ(MODELDEPLOY_RESYNC_SECONDS="often")
    assert cli.main([]) == 2
    err = capsys.readouterr().err
    assert err.startswith("modeldeploy-operator: MODELDEPLOY_RESYNC_SECONDS='often'")
