"""The packed layout of a multiple-choice example: one sequence, replies restarting after the prompt."""

import numpy as np

from jaxdfl.data.text_encoding import POSITIONS, PREDICTORS, SEGMENTS, TOKENS, pack


def test_pack_lays_out_prompt_and_every_reply():
    rows = pack([10, 11, 12], [[20, 21], [30], [40, 41, 42]])
    np.testing.assert_array_equal(rows[TOKENS], [10, 11, 12, 20, 21, 30, 40, 41, 42])
    np.testing.assert_array_equal(rows[POSITIONS], [0, 1, 2, 3, 4, 3, 3, 4, 5])  # each reply right after the prompt
    np.testing.assert_array_equal(rows[SEGMENTS], [0, 0, 0, 1, 1, 2, 3, 3, 3])
    # a reply's first token is predicted by the prompt's last token, later ones by the token before them
    np.testing.assert_array_equal(rows[PREDICTORS], [0, 0, 0, 2, 3, 2, 2, 6, 7])
