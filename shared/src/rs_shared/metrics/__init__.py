"""Every evaluation metric of rs-vlm, defined once, each following a named published protocol.

Import from the module that holds the metric (modules load their heavy dependencies only when used):

* :mod:`.segmentation` — referring segmentation: oIoU, mIoU, P@0.5…0.9 (RRSIS official test script)
* :mod:`.classification` — micro top-1 accuracy, macro extras; base / new / harmonic mean over seeds (CoOp)
* :mod:`.text` — VQA answer matching: normalised exact match, containment and TEOChat/WUPS matchers
* :mod:`.boxes` — IoU of horizontal boxes and exact IoU of oriented boxes / convex quadrilaterals
* :mod:`.detection` — VOC07 11-point and all-point AP/mAP, APnc (no confidence), grounding Acc@0.5
* :mod:`.captioning` — BLEU-1..4, METEOR, ROUGE-L, CIDEr through pycocoevalcap
* :mod:`.gcg` — grounded conversation generation (GLaMM): mask AP50, greedy mIoU, recall, METEOR/CIDEr
* :mod:`.report` — results as JSON with protocol, seeds, package versions and git commit

All metrics are returned as fractions in [0, 1]; command-line tools print percentages.
"""
