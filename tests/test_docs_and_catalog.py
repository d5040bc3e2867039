"""Every setting is documented; every catalog file is valid; bad catalogs are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from stldata.catalog import Catalog, CatalogError, load_dataset
from stldata.settings import Settings

from conftest import ROOT


def test_every_setting_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [n for n in Settings.model_fields if f"`STLDATA_{n.upper()}`" not in readme]
    assert not missing


def test_bundled_catalog_loads_and_its_samples_exist() -> None:
    catalog = Catalog.load(ROOT / "catalog")
    assert {d.id for d in catalog} == {
        "slmpd-crime", "csb-311", "ucity-crime", "stl-aldermen-meetings",
        "slmpd-neighborhood-districts", "stl-neighborhoods", "arpa-direct-aid-by-zip",
        "metro-stops", "metro-routes", "stl-census-tracts-1940-1970"}
    for dataset in catalog:
        assert dataset.source.url.startswith("https://")
        for pattern in dataset.source.samples:
            assert list(ROOT.glob(pattern)), pattern


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("id = 'x'", "missing required key 'title'"),
        ("id = 'Bad Id'\ntitle='t'\nkey=['a']\nsource={url=''}\ncolumns=[{name='a'}]",
         "must be lower-case"),
        ("id = 'x'\ntitle='t'\nkey=['b']\nsource={url=''}\ncolumns=[{name='a'}]",
         "key names unknown columns ['b']"),
        ("id = 'x'\ntitle='t'\nkey=['a']\nsource={url=''}\ncolumns=[{name='a', type='money'}]",
         "type 'money' is not one of"),
        ("id = 'x'\ntitle='t'\nkey=['a']\nsource={url=''}\ncolumns=[{name='A-b'}]",
         "lower_snake_case"),
        ("id = [", "not valid TOML"),
        ("id = 'x'\ntitle='t'\nkey=['a']\ncolumns=[{name='a'}]\n"
         "[source]\nurl=''\nformat='html'\ntable='index:first'",
         "source.table 'index:first': index must be a table number"),
        ("id = 'x'\ntitle='t'\nkey=['a']\ncolumns=[{name='a'}]\n"
         "[source]\nurl=''\nformat='pdf'\npages='0-2'",
         "source.pages '0-2' must be page numbers from 1"),
    ],
)
def test_bad_catalog_files_are_named_with_their_problem(tmp_path: Path, text: str,
                                                        problem: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(CatalogError) as raised:
        load_dataset(path)
    assert problem in str(raised.value) and "bad.toml" in str(raised.value)
