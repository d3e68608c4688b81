"""The convergence experiment: empirical vs analytic NTK/NNGP at one width (:mod:`.run`)
and the width-sweep report with fitted exponents (:mod:`.report`)."""
