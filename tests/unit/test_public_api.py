import gazelle


def test_public_surface_is_short_and_explicit():
    assert sorted(gazelle.__all__) == sorted([
        "DeployError", "Endpoint", "GazelleError", "configure", "delete", "deploy", "endpoint",
        "list_models", "rollback", "save", "__version__",
    ])


def test_deploy_error_names_stage_and_cause():
    err = gazelle.DeployError("sanity", "prediction 2 differs", logs=["line a", "line b"])
    assert "sanity" in str(err) and "prediction 2 differs" in str(err) and "line b" in str(err)
    assert isinstance(err, gazelle.GazelleError)
