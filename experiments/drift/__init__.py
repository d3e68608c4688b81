"""The drift experiment: training networks of one width beside their linearization
(:mod:`.run`) and the width-sweep report (:mod:`.report`)."""
