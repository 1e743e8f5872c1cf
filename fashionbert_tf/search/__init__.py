"""FashionBERT in search (paper 3.4, Figure 6, Table 4): click prediction on <query, title, image>.

Start at `finetune.run_finetuning(config)` (`fashionbert finetune`) and
`click_evaluation.run_search_evaluation(config)` (`fashionbert evaluate-search`, Table 4). The input
layout is `layout.py`, the three click-model variants `click_model.py`, their building,
initialization and restore `search_model_builder.py`.
"""
