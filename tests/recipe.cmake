# The run recipe (cli/recipe.c): YAML parsing, errors with file:line:col, flags over the file, method
# defaults, canonical JSON and hash, the example's round trip; and the `qcal recipe` command.
qc_test(test_recipe test_recipe.c LABELS unit)
qc_script_test(test_recipe_cli test_recipe_cli.sh LABELS unit)
