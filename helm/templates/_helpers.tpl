{{/* Chart name. */}}
{{- define "inferadb.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/*
Base name of every object: the release name (the guide installs release
"inferadb", giving inferadb-engine / inferadb-control), or
<release>-<chart> when the release name does not contain the chart name.
Truncated so "<fullname>-control-<n>" stays a DNS label.
*/}}
{{- define "inferadb.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "inferadb.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Labels of every object. Call with (dict "root" $ "component" "engine"). */}}
{{- define "inferadb.labels" -}}
helm.sh/chart: {{ include "inferadb.chart" .root }}
{{ include "inferadb.selectorLabels" . }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: inferadb
{{- with .root.Values.discovery.tailscale.localCluster }}
inferadb.com/cluster: {{ . | quote }}
{{- end }}
{{- end -}}

{{- define "inferadb.selectorLabels" -}}
app.kubernetes.io/name: {{ include "inferadb.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "inferadb.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag | toString) -}}
{{- end -}}

{{- define "inferadb.serviceAccountName" -}}
{{- include "inferadb.fullname" . -}}
{{- end -}}

{{/* The local cluster's MagicDNS zone. */}}
{{- define "inferadb.localDomain" -}}
{{- $t := .Values.discovery.tailscale -}}
{{- default (printf "%s.ts.net" $t.localCluster) $t.tailscaleDomain -}}
{{- end -}}

{{/* Tags the nodes request. */}}
{{- define "inferadb.tags" -}}
{{- $t := .Values.discovery.tailscale -}}
{{- if $t.tags -}}
{{- toJson $t.tags -}}
{{- else -}}
{{- toJson (list (printf "tag:inferadb-%s" $t.localCluster)) -}}
{{- end -}}
{{- end -}}

{{/*
Checks of the values, failing the render with one line naming the key.
*/}}
{{- define "inferadb.validate" -}}
{{- $d := .Values.discovery -}}
{{- $t := $d.tailscale -}}
{{- if not (has $d.mode (list "tailscale" "kubernetes" "none")) -}}
{{- fail (printf "discovery.mode: %q is not one of tailscale, kubernetes, none" (toString $d.mode)) -}}
{{- end -}}
{{- if hasKey $t "image" -}}
{{- fail "discovery.tailscale.image: there is no Tailscale sidecar any more (the node is embedded in inferadb-mesh); remove the key and set image.repository/image.tag for inferadb-mesh" -}}
{{- end -}}
{{- if hasKey $t "extraArgs" -}}
{{- fail "discovery.tailscale.extraArgs: there is no Tailscale sidecar any more; the node's settings are discovery.tailscale.{controlUrl,tags,udpPort,state}" -}}
{{- end -}}
{{- if not $t.enabled -}}
{{- fail "discovery.tailscale.enabled: must be true (every pod joins the tailnet: control reaches engines over it)" -}}
{{- end -}}
{{- if not $t.localCluster -}}
{{- fail "discovery.tailscale.localCluster: required (e.g. us-west-1)" -}}
{{- end -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$" $t.localCluster) -}}
{{- fail (printf "discovery.tailscale.localCluster: %q is not a DNS label" $t.localCluster) -}}
{{- end -}}
{{- if not (and $t.authKey $t.authKey.existingSecret $t.authKey.key) -}}
{{- fail "discovery.tailscale.authKey: existingSecret and key are required (kubectl create secret generic tailscale-auth --from-literal=authkey=...)" -}}
{{- end -}}
{{- range $i, $c := $t.remoteClusters -}}
{{- range $k := list "name" "tailscaleDomain" "serviceName" "port" -}}
{{- if not (index $c $k) -}}
{{- fail (printf "discovery.tailscale.remoteClusters[%d].%s: required" $i $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- /* What the roles cannot start without (inferadb-mesh <role> --check
fails on the rendered config otherwise, and the pods would crash-loop). */ -}}
{{- if and (or .Values.engine.enabled .Values.control.enabled) (not (and .Values.cacheInvalidation.webhookSecret.existingSecret .Values.cacheInvalidation.webhookSecret.key)) -}}
{{- fail "cacheInvalidation.webhookSecret: existingSecret and key are required (the secret that signs invalidation webhooks, the same in every region: kubectl create secret generic inferadb-webhook --from-literal=secret=...)" -}}
{{- end -}}
{{- if and .Values.control.enabled (not (and .Values.control.api.existingSecret .Values.control.api.key)) -}}
{{- fail "control.api: existingSecret and key are required (the bearer token of POST /v1/vaults: kubectl create secret generic inferadb-api --from-literal=token=...)" -}}
{{- end -}}
{{- if and (eq $d.mode "tailscale") .Values.engine.enabled (not .Values.control.enabled) (not $t.remoteClusters) -}}
{{- fail "discovery.tailscale.remoteClusters: empty while control.enabled is false: the engines would have no control to discover (list the regions that run control)" -}}
{{- end -}}
{{- with $d.healthCheck -}}
{{- if .enabled -}}
{{- if not (regexMatch "^/[^[:space:]]*$" (toString .path)) -}}
{{- fail (printf "discovery.healthCheck.path: %q is not an absolute path like /healthz" (toString .path)) -}}
{{- end -}}
{{- range $k := list "intervalMs" "timeoutMs" "healthyThreshold" "unhealthyThreshold" -}}
{{- if lt (int (index $d.healthCheck $k)) 1 -}}
{{- fail (printf "discovery.healthCheck.%s: must be at least 1" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- with .Values.coordinator -}}
{{- if .enabled -}}
{{- if not (regexMatch "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$" (toString .host)) -}}
{{- fail (printf "coordinator.host: %q is not a DNS name: give the name in the TLS certificate that nodes dial (e.g. coord.us-west-1.example.com)" (toString .host)) -}}
{{- end -}}
{{- if not .tls.existingSecret -}}
{{- fail "coordinator.tls.existingSecret: required (a kubernetes.io/tls Secret for coordinator.host: kubectl create secret tls inferadb-coordinator-tls --cert=cert.pem --key=key.pem)" -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- range $i, $c := .Values.control.remoteClusters -}}
{{- range $k := list "name" "tailscaleDomain" "serviceName" "port" -}}
{{- if not (index $c $k) -}}
{{- fail (printf "control.remoteClusters[%d].%s: required" $i $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/*
The discovery block both roles share, in the guide's shape:
mode: {type, local_cluster, local, remote_clusters}, cache_ttl_seconds and
health_check (inferadb-discovery's keys). Call with (dict "root" $
"clusters" LIST "service" NAME "port" PORT "local" BOOL): the remote
clusters, and the Service, tailnet port and presence of what this role
discovers in its own cluster (the engine: control; control: the engines).
The local cluster is looked up as <service>.<localDomain> with this
release's own service name and port, not copied from the remote clusters:
a single-cluster install (no remoteClusters) or another release name still
finds its own pods. Without that role in this release (control.enabled
false, as in ap-southeast-1) the local lookup is off (`local.type: none`).
*/}}
{{- define "inferadb.discoveryConfig" -}}
{{- $d := .root.Values.discovery -}}
mode:
  type: {{ $d.mode }}
  {{- if eq $d.mode "tailscale" }}
  local_cluster: {{ $d.tailscale.localCluster | quote }}
  local:
    {{- if .local }}
    type: tailscale
    tailscale_domain: {{ include "inferadb.localDomain" .root | quote }}
    service_name: {{ .service | quote }}
    port: {{ .port | int }}
    {{- else }}
    type: none
    {{- end }}
  remote_clusters:
  {{- range .clusters }}
    - name: {{ .name | quote }}
      tailscale_domain: {{ .tailscaleDomain | quote }}
      service_name: {{ .serviceName | quote }}
      port: {{ .port | int }}
  {{- else }} []
  {{- end }}
  {{- else if eq $d.mode "kubernetes" }}
  service_name: {{ .service | quote }}
  port: {{ .root.Values.metrics.port | int }}
  {{- end }}
cache_ttl_seconds: {{ $d.cacheTtlSeconds | int }}
{{- with $d.healthCheck }}
{{- if .enabled }}
health_check:
  path: {{ .path | quote }}
  interval_ms: {{ .intervalMs | int }}
  timeout_ms: {{ .timeoutMs | int }}
  healthy_threshold: {{ .healthyThreshold | int }}
  unhealthy_threshold: {{ .unhealthyThreshold | int }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The node section (mesh:) both roles share. Hostname comes from the pod name (env). */}}
{{- define "inferadb.meshConfig" -}}
{{- $t := .Values.discovery.tailscale -}}
control_url: {{ $t.controlUrl | quote }}
auth_key_file: /var/run/secrets/tailscale/{{ $t.authKey.key }}
state_dir: /var/lib/inferadb-mesh
tags: {{ include "inferadb.tags" . }}
listen: "0.0.0.0:{{ $t.udpPort | int }}"
ephemeral: {{ not $t.state.persistence.enabled }}
{{- end -}}
