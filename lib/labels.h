/*
 * labels.h - the 1000 ImageNet class names, in torchvision's class order.
 */
#ifndef SI_LABELS_H
#define SI_LABELS_H

#define SI_NUM_LABELS 1000

/* Name of class idx, or "?" when idx is out of range. Static storage. */
const char *si_label(int idx);

#endif
