"""The 90-dataset UCI benchmark of recurrent kernels: the run (:mod:`.run`), the kernel
grid and SVM selection (:mod:`.benchmark`), the statistics (:mod:`.stats`) and the table
(:mod:`.report`)."""
