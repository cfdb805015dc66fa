{{/*
One role's StatefulSet. Call with (dict "root" $ "component" "engine"
"values" .Values.engine "envPrefix" "INFERADB__").

A StatefulSet so that each replica has a stable name, <fullname>-engine-<n>,
which is also its tailnet host name (MagicDNS service records group
"<service>-<n>" hosts into "<service>.<cluster>.ts.net"), and its own node
identity: per-replica state from volumeClaimTemplates, or an emptyDir with
an ephemeral node. Never one state for all replicas.
*/}}
{{- define "inferadb.statefulset" -}}
{{- $root := .root -}}
{{- $v := .values -}}
{{- $t := $root.Values.discovery.tailscale -}}
{{- $name := printf "%s-%s" (include "inferadb.fullname" $root) .component -}}
{{- $persist := $t.state.persistence.enabled -}}
{{- $sc := $root.Values.securityContext -}}
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: {{ $name }}
  namespace: {{ $root.Release.Namespace }}
  labels:
    {{- include "inferadb.labels" (dict "root" $root "component" .component) | nindent 4 }}
spec:
  serviceName: {{ $name }}
  replicas: {{ $v.replicas | int }}
  podManagementPolicy: Parallel
  selector:
    matchLabels:
      {{- include "inferadb.selectorLabels" (dict "root" $root "component" .component) | nindent 6 }}
  template:
    metadata:
      labels:
        {{- include "inferadb.labels" (dict "root" $root "component" .component) | nindent 8 }}
      annotations:
        checksum/config: {{ include (print $root.Template.BasePath "/configmap.yaml") $root | sha256sum }}
        {{- with $v.podAnnotations }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
    spec:
      serviceAccountName: {{ include "inferadb.serviceAccountName" $root }}
      # Only the kubernetes discovery mode talks to the API server.
      automountServiceAccountToken: {{ eq $root.Values.discovery.mode "kubernetes" }}
      enableServiceLinks: false
      {{- with $root.Values.imagePullSecrets }}
      imagePullSecrets:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      securityContext:
        runAsNonRoot: true
        runAsUser: {{ $sc.runAsUser | int }}
        runAsGroup: {{ $sc.runAsGroup | int }}
        fsGroup: {{ $sc.fsGroup | int }}
        fsGroupChangePolicy: OnRootMismatch
        seccompProfile:
          type: RuntimeDefault
      containers:
        - name: inferadb-{{ .component }}
          image: {{ include "inferadb.image" $root | quote }}
          imagePullPolicy: {{ $root.Values.image.pullPolicy }}
          args: [{{ .component | quote }}, "--config", "/etc/inferadb/{{ .component }}.yaml"]
          env:
            # Each replica registers under its own pod name.
            - name: {{ .envPrefix }}MESH__HOSTNAME
              valueFrom:
                fieldRef:
                  fieldPath: metadata.name
            - name: INFERADB_MESH_LOG
              value: {{ $root.Values.logLevel | quote }}
            - name: INFERADB_MESH_LOG_FORMAT
              value: {{ $root.Values.logFormat | quote }}
            {{- with $v.extraEnv }}
            {{- toYaml . | nindent 12 }}
            {{- end }}
          ports:
            # /metrics, /healthz, /readyz (and the role's HTTP API) on the pod network.
            - name: metrics
              containerPort: {{ $root.Values.metrics.port | int }}
              protocol: TCP
            # WireGuard, userspace, one UDP socket.
            - name: wireguard
              containerPort: {{ $t.udpPort | int }}
              protocol: UDP
          readinessProbe:
            httpGet:
              path: /readyz
              port: metrics
            initialDelaySeconds: {{ $root.Values.probes.readiness.initialDelaySeconds | int }}
            periodSeconds: {{ $root.Values.probes.readiness.periodSeconds | int }}
            failureThreshold: {{ $root.Values.probes.readiness.failureThreshold | int }}
          livenessProbe:
            httpGet:
              path: /healthz
              port: metrics
            initialDelaySeconds: {{ $root.Values.probes.liveness.initialDelaySeconds | int }}
            periodSeconds: {{ $root.Values.probes.liveness.periodSeconds | int }}
            failureThreshold: {{ $root.Values.probes.liveness.failureThreshold | int }}
          resources:
            {{- toYaml (default $t.resources $v.resources) | nindent 12 }}
          securityContext:
            runAsNonRoot: true
            allowPrivilegeEscalation: false
            privileged: false
            readOnlyRootFilesystem: true
            capabilities:
              drop: ["ALL"]
            seccompProfile:
              type: RuntimeDefault
          volumeMounts:
            - name: config
              mountPath: /etc/inferadb
              readOnly: true
            - name: tailscale-auth
              mountPath: /var/run/secrets/tailscale
              readOnly: true
            - name: state
              mountPath: /var/lib/inferadb-mesh
            - name: tmp
              mountPath: /tmp
            {{- if $root.Values.cacheInvalidation.webhookSecret.existingSecret }}
            - name: webhook-secret
              mountPath: /var/run/secrets/inferadb/webhook
              readOnly: true
            {{- end }}
            {{- if and (eq .component "control") $root.Values.control.api.existingSecret }}
            - name: api-token
              mountPath: /var/run/secrets/inferadb/api
              readOnly: true
            {{- end }}
      volumes:
        - name: config
          configMap:
            name: {{ include "inferadb.fullname" $root }}-config
        - name: tailscale-auth
          secret:
            secretName: {{ $t.authKey.existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ $t.authKey.key }}
                path: {{ $t.authKey.key }}
        - name: tmp
          emptyDir:
            medium: Memory
            sizeLimit: 16Mi
        {{- if not $persist }}
        # Ephemeral node: new keys on every start (mesh.ephemeral: true).
        - name: state
          emptyDir:
            sizeLimit: 64Mi
        {{- end }}
        {{- with $root.Values.cacheInvalidation.webhookSecret }}
        {{- if .existingSecret }}
        - name: webhook-secret
          secret:
            secretName: {{ .existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ .key }}
                path: {{ .key }}
        {{- end }}
        {{- end }}
        {{- if and (eq .component "control") $root.Values.control.api.existingSecret }}
        - name: api-token
          secret:
            secretName: {{ $root.Values.control.api.existingSecret }}
            defaultMode: 0440
            items:
              - key: {{ $root.Values.control.api.key }}
                path: {{ $root.Values.control.api.key }}
        {{- end }}
      {{- with $v.nodeSelector }}
      nodeSelector:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.tolerations }}
      tolerations:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $v.affinity }}
      affinity:
        {{- toYaml . | nindent 8 }}
      {{- end }}
  {{- if $persist }}
  # One claim per replica: each node's keys and registration.
  volumeClaimTemplates:
    - metadata:
        name: state
        labels:
          {{- include "inferadb.selectorLabels" (dict "root" $root "component" .component) | nindent 10 }}
      spec:
        accessModes:
          {{- toYaml $t.state.persistence.accessModes | nindent 10 }}
        {{- with $t.state.persistence.storageClassName }}
        storageClassName: {{ . | quote }}
        {{- end }}
        resources:
          requests:
            storage: {{ $t.state.persistence.size }}
  {{- end }}
{{- end -}}
