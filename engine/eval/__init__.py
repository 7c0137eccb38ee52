"""Scoring a model on a labelled data set: YOLO data.yaml and label files (:mod:`.datasets`), COCO mAP (:mod:`.evaluate`)."""
