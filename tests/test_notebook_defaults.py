"""A notebook opened in Jupyter without a profile runs the default profile: its parameter defaults are that profile's."""
from helpers.notebook_defaults import drifted
from helpers.pipeline import DEFAULT_PROFILE


def test_every_notebooks_defaults_are_the_default_profiles_values():
    assert drifted() == {}, (f"parameters whose defaults differ from profile {DEFAULT_PROFILE}: run "
                             f"`python -m helpers.notebook_defaults` to write them")
