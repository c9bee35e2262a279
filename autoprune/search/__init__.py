"""The search: space (policy from suggestions), study and storage, objective and the one tell path, runners, Pareto front, recording."""
