{{/*
Names. The release "splitinfer" gives splitinfer-stem, splitinfer-gateway, ...
(the names the kustomize overlays use); another release R gives R-splitinfer-*.
Kept short: Knative appends -00001-deployment-<hash> to pod names.
*/}}
{{- define "splitinfer.fullname" -}}
{{- if contains "splitinfer" .Release.Name -}}
{{- .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-splitinfer" .Release.Name | trunc 30 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "splitinfer.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" -}}
{{- end -}}

{{- define "splitinfer.selectorLabels" -}}
app.kubernetes.io/name: splitinfer
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "splitinfer.labels" -}}
{{ include "splitinfer.selectorLabels" . }}
app.kubernetes.io/part-of: splitinfer
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
helm.sh/chart: {{ include "splitinfer.chart" . }}
{{- end -}}

{{/* A segment as a name: layer4..head -> layer4-head, layer2.3 -> layer2-3. */}}
{{- define "splitinfer.slug" -}}
{{- . | lower | replace ".." "-" | replace "." "-" | replace "#" "c" | replace "_" "-" -}}
{{- end -}}

{{/*
The layout of the chosen plan, as YAML:
  steps:     the plan's steps, each with its bands and function URLs
  functions: the Knative Services to create: name, function (label and
             --name), segment, slug (image), bands (calls per request);
             a resident run's band also steps (--steps) and band (--band)
  next:      with .Values.chain, Service name -> the URL it passes its
             output on to (stage --next): the next step's, for consecutive
             one-band steps
*/}}
{{- define "splitinfer.layout" -}}
{{- $root := . -}}
{{- $plan := index .Values.plans .Values.plan -}}
{{- if not $plan -}}
{{- fail (printf "plan %q is not one of .Values.plans" .Values.plan) -}}
{{- end -}}
{{- if not (has .Values.bandServices (list "shared" "perBand")) -}}
{{- fail (printf "bandServices must be shared or perBand, not %q" .Values.bandServices) -}}
{{- end -}}
{{- $full := include "splitinfer.fullname" . -}}
{{- $steps := list -}}
{{- $fns := list -}}
{{- $seen := dict -}}
{{- $resident := and (hasKey $plan "resident") $plan.resident -}}
{{- $runs := list -}}
{{- $run := dict -}}
{{- range $s := $plan.steps -}}
{{- $k := 1 -}}
{{- if $s.bands -}}
{{- $k = int $s.bands -}}
{{- else if $s.banded -}}
{{- $k = int $root.Values.bands -}}
{{- end -}}
{{- if lt $k 1 -}}
{{- fail (printf "step %s: bands must be >= 1" $s.segment) -}}
{{- end -}}
{{- $slug := include "splitinfer.slug" $s.segment -}}
{{- $urls := list -}}
{{- if and $resident (gt $k 1) -}}
{{- /* a resident run: consecutive banded steps of one band count */ -}}
{{- if not (and $run (eq (int $run.k) $k)) -}}
{{- $names := list -}}
{{- range $b := until $k -}}
{{- $names = append $names (printf "run%d-b%d" (len $runs) $b) -}}
{{- end -}}
{{- $run = dict "k" $k "names" $names "steps" (list) -}}
{{- $runs = append $runs $run -}}
{{- end -}}
{{- $_ := set $run "steps" (append $run.steps $s.segment) -}}
{{- range $n := $run.names -}}
{{- $urls = append $urls (printf "http://%s-%s.%s.svc.cluster.local" $full $n $root.Release.Namespace) -}}
{{- end -}}
{{- else if and (gt $k 1) (eq $root.Values.bandServices "perBand") -}}
{{- range $b := until $k -}}
{{- $name := printf "%s-%s-b%d" $full $slug $b -}}
{{- $urls = append $urls (printf "http://%s.%s.svc.cluster.local" $name $root.Release.Namespace) -}}
{{- if not (hasKey $seen $name) -}}
{{- $_ := set $seen $name true -}}
{{- $fns = append $fns (dict "name" $name "function" (printf "%s-b%d" $slug $b) "segment" $s.segment "slug" $slug "bands" 1) -}}
{{- end -}}
{{- end -}}
{{- else -}}
{{- $name := printf "%s-%s" $full $slug -}}
{{- $urls = append $urls (printf "http://%s.%s.svc.cluster.local" $name $root.Release.Namespace) -}}
{{- if not (hasKey $seen $name) -}}
{{- $_ := set $seen $name true -}}
{{- $fns = append $fns (dict "name" $name "function" $slug "segment" $s.segment "slug" $slug "bands" $k) -}}
{{- end -}}
{{- end -}}
{{- if not (and $resident (gt $k 1)) -}}
{{- $run = dict -}}
{{- end -}}
{{- $steps = append $steps (dict "segment" $s.segment "bands" $k "functions" $urls "name" (printf "%s-%s" $full $slug)) -}}
{{- end -}}
{{- /* Band b of a resident run is one Service running every segment of the
run (stage --segment FIRST..LAST --steps A,B,... --band b/K) from the image
holding the whole model ("all", the baseline's). */ -}}
{{- range $r := $runs -}}
{{- $seg := printf "%s..%s" (first (splitList ".." (first $r.steps))) (last (splitList ".." (last $r.steps))) -}}
{{- range $b, $n := $r.names -}}
{{- $fns = append $fns (dict "name" (printf "%s-%s" $full $n) "function" $n "segment" $seg "slug" "all" "bands" 1 "steps" (join "," $r.steps) "band" (printf "%d/%d" $b (int $r.k))) -}}
{{- end -}}
{{- end -}}
{{- $next := dict -}}
{{- if $root.Values.chain -}}
{{- range $i, $s := $steps -}}
{{- if lt (add1 $i) (len $steps) -}}
{{- $n := index $steps (add1 $i) -}}
{{- if and (eq (int $s.bands) 1) (eq (int $n.bands) 1) -}}
{{- $_ := set $next $s.name (index $n.functions 0) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- dict "steps" $steps "functions" $fns "next" $next | toYaml -}}
{{- end -}}

{{/* The plan JSON the gateway reads (lib/plan.h). */}}
{{- define "splitinfer.planJson" -}}
{{- $layout := include "splitinfer.layout" . | fromYaml -}}
{{- $steps := list -}}
{{- range $s := $layout.steps -}}
{{- $steps = append $steps (dict "segment" $s.segment "bands" (int $s.bands) "functions" $s.functions) -}}
{{- end -}}
{{- $plan := dict "name" .Values.plan "model" "resnet50" "dtype" .Values.dtype "timeout_ms" (int .Values.timeoutMs) "steps" $steps -}}
{{- /* "chain" only when on: the kustomize overlays' plans (unchained) have no such key */ -}}
{{- if .Values.chain }}{{ $_ := set $plan "chain" true }}{{ end -}}
{{- /* "encoding" likewise only when not the default */ -}}
{{- if ne .Values.encoding "zeros" }}{{ $_ := set $plan "encoding" .Values.encoding }}{{ end -}}
{{- with index .Values.plans .Values.plan }}{{ if .resident }}{{ $_ := set $plan "resident" true }}{{ end }}{{ end -}}
{{- $plan | toPrettyJson -}}
{{- end -}}

{{/* Image of a stage function: its segment's image, or with model.source=pvc
the gateway image (no weights; they come from the volume). */}}
{{- define "splitinfer.stageImage" -}}
{{- if eq .root.Values.model.source "pvc" -}}
{{- printf "%s-gateway:%s" .root.Values.image.repository .root.Values.image.tag -}}
{{- else -}}
{{- printf "%s-stage-%s:%s" .root.Values.image.repository .slug .root.Values.image.tag -}}
{{- end -}}
{{- end -}}

{{- define "splitinfer.gatewayImage" -}}
{{- printf "%s-gateway:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}
